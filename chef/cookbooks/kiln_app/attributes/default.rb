# Every value the bake knows arrives in node.json (normal attributes, which win over these
# defaults). The defaults below only make a missing value fail early with a clear message.
default['kiln_app']['name'] = nil
default['kiln_app']['version'] = nil
default['kiln_app']['release'] = nil
default['kiln_app']['package'] = nil # "<name>-<rpm version>-<release>"
default['kiln_app']['service'] = nil

default['kiln_app']['repo']['id'] = 'kiln'
default['kiln_app']['repo']['name'] = 'Kiln'
default['kiln_app']['repo']['baseurl'] = nil
default['kiln_app']['repo']['gpgkey'] = nil
default['kiln_app']['repo']['gpgcheck'] = true
default['kiln_app']['repo']['repo_gpgcheck'] = true

default['kiln_app']['smoke']['commands'] = []
# A freshly started service may need a few seconds before it answers.
default['kiln_app']['smoke']['retries'] = 10
default['kiln_app']['smoke']['retry_delay'] = 3

# Where the image records what was baked into it.
default['kiln_app']['release_file'] = '/etc/kiln/release.json'
