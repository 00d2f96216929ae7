#
# Cookbook:: kiln_app
# Recipe:: repo
#
# The Kiln yum repository, with both signatures checked: the packages' (gpgcheck) and the
# repository metadata's (repo_gpgcheck, repomd.xml.asc).
# Helpers are recipe methods: read every value here, before the resource blocks use it.
repo = kiln_app['repo']
repo_id = kiln_required('repo', 'id')
gpgkey_url = kiln_required('repo', 'gpgkey')
repo_url = kiln_required('repo', 'baseurl')
key_path = "/etc/pki/rpm-gpg/RPM-GPG-KEY-#{repo_id}"
pinned = kiln_required('repo', 'gpgkey_fingerprint').to_s.upcase
fingerprints_of = method(:kiln_key_fingerprints) # the ruby_block's block runs on the resource

directory '/etc/pki/rpm-gpg' do
  recursive true
end

# Import the key up front, so the package install never stops to ask about an unknown key.
remote_file key_path do
  source gpgkey_url
  mode '0644'
  notifies :run, "ruby_block[check #{repo_id} signing key]", :immediately
end

# The key is served from the repository bucket, which is no authority: it is imported only when
# it is exactly one key with the fingerprint Kiln pinned (node.json).
ruby_block "check #{repo_id} signing key" do
  block do
    found = fingerprints_of.call(key_path)
    unless found == [pinned]
      ::File.delete(key_path)
      raise "kiln_app: #{gpgkey_url} holds key(s) #{found.join(', ')}, not the pinned #{pinned}"
    end
  end
  action :nothing
  notifies :run, "execute[import #{repo_id} signing key]", :immediately
end

execute "import #{repo_id} signing key" do
  command ['rpm', '--import', key_path]
  action :nothing
end

yum_repository repo_id do
  description repo['name'] || 'Kiln'
  baseurl repo_url
  gpgkey "file://#{key_path}"
  gpgcheck repo['gpgcheck'] != false
  repo_gpgcheck repo['repo_gpgcheck'] != false
  enabled true
  # Metadata changes on every publish: never trust a stale cache during a bake.
  metadata_expire '0'
  # A repository that cannot be read or verified fails the run with dnf's reason, rather than
  # being skipped until the install finds "no candidate version".
  skip_if_unavailable false
  make_cache true
  action :create
end
