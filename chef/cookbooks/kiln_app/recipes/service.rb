#
# Cookbook:: kiln_app
# Recipe:: service
#
# Enabled so it starts on every instance launched from the image; started now for the smoke
# checks. Apps without a service (libraries, tools) skip this recipe's work.
service_name = kiln_app['service']

if service_name && !service_name.to_s.empty?
  service service_name do
    action [:enable, :start]
  end
else
  log 'kiln_app: no service to start' do
    level :info
  end
end
