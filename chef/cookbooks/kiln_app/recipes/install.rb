#
# Cookbook:: kiln_app
# Recipe:: install
#
# Exactly the version and release the bake asked for: never "latest", which could pick up a
# package published after the bake started. Dependencies may come from the system's repositories.
# Helpers are recipe methods: read every value here, before the resource blocks use it.
pkg = kiln_package
release = {
  app: kiln_required('name'),
  version: kiln_required('version'),
  release: kiln_required('release'),
  package: kiln_required('package'),
  service: kiln_app['service'],
  repo: kiln_required('repo', 'baseurl'),
}

package pkg[:name] do
  version "#{pkg[:version]}-#{pkg[:release]}"
  action :install
end

# dnf installs a package whose %pre or %post scriptlet fails, and succeeds; rpm's log says so.
scriptlet_log = '/var/log/dnf.rpm.log'
scriptlet_error = /Error in \S+ scriptlet in rpm package #{Regexp.escape(pkg[:name])}$/
ruby_block "#{pkg[:name]} scriptlets succeeded" do
  block do
    failed = ::File.readlines(scriptlet_log).grep(scriptlet_error).last[scriptlet_error]
    raise "kiln_app: #{failed} (#{scriptlet_log})"
  end
  only_if { ::File.exist?(scriptlet_log) && ::File.foreach(scriptlet_log).any? { |l| l =~ scriptlet_error } }
end

directory ::File.dirname(kiln_app['release_file']) do
  mode '0755'
  recursive true
end

# What was baked into this image, for people and tools on the instance.
template kiln_app['release_file'] do
  source 'release.json.erb'
  mode '0644'
  variables(release)
end
