name 'kiln_app'
maintainer 'Kiln'
maintainer_email 'release-engineering@example.com'
license 'Apache-2.0'
description 'Installs one Kiln-built RPM at an exact version from the signed Kiln yum repository, ' \
            'starts its service and smoke-tests it'
version '1.0.0'
chef_version '>= 16.0'

%w(amazon redhat centos rocky almalinux fedora).each do |platform|
  supports platform
end
