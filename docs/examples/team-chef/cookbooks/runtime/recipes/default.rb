#
# Cookbook:: runtime
# Recipe:: default
#
# What an app's package expects to find on the image before it is installed: here a launcher
# and its settings, standing in for a JDK or an interpreter (a `package` resource works the same).
home = node['runtime']['home']

directory "#{home}/bin" do
  mode '0755'
  recursive true
end

file "#{home}/bin/runtime" do
  mode '0755'
  content "#!/bin/sh\necho runtime #{node['runtime']['version']} heap #{node['runtime']['heap']}\n"
end

file "#{home}/runtime.conf" do
  mode '0644'
  content "version=#{node['runtime']['version']}\nheap=#{node['runtime']['heap']}\n"
end
