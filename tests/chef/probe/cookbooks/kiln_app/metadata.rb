name 'kiln_app'
description 'The provisioning tests cookbook: installs the probe RPM shipped beside it'
version '0.1.0'
