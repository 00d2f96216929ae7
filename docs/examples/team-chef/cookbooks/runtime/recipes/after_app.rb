#
# Cookbook:: runtime
# Recipe:: after_app
#
# Runs after recipe[kiln_app] in the run list: the app is installed by now, so this may read
# what it installed (here Kiln's record of the release baked into the image).
home = node['runtime']['home']

execute 'note the app this runtime serves' do
  command "cp /etc/kiln/release.json #{home}/app-release.json"
  creates "#{home}/app-release.json"
end
