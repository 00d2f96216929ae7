# Installs the RPM that the tests put in files/default/, then runs node.json's smoke commands:
# a real Chef run of what Kiln uploads, without a yum repository behind it.
rpm = "#{Chef::Config[:file_cache_path]}/kiln-probe.rpm"

cookbook_file rpm do
  source 'kiln-probe.rpm'
end

rpm_package 'kiln-probe' do
  source rpm
end

node['kiln_app']['smoke']['commands'].each_with_index do |check, index|
  execute "smoke check #{index + 1}" do
    command check
    live_stream true
  end
end
