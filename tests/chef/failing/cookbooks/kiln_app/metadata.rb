name 'kiln_app'
description 'A cookbook whose run fails, as a real one does'
version '0.1.0'
