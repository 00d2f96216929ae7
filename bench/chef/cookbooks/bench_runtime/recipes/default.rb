#
# Cookbook:: bench_runtime
# Recipe:: default
#
# What installing a runtime costs a bake: an archive of about a JDK's size (Corretto 17 headless
# is about 190 MB unpacked) is unpacked into /opt and every file checksummed, as a runtime's
# install verifies it. The archive is made on the instance from /dev/urandom (the sandbox's
# instances reach nothing but loopback), so no download is in the figure: on AWS that adds to
# each bake that converges the runtime.
home = '/opt/bench-runtime'
size_mb = (node['bench_runtime'] && node['bench_runtime']['size_mb']) || 192

execute 'unpack the runtime' do
  command <<~SH
    set -e
    work=$(mktemp -d)
    mkdir -p "$work/src/lib"
    for i in $(seq 1 #{size_mb / 4}); do head -c 4M /dev/urandom > "$work/src/lib/part$i.jar"; done
    tar -C "$work/src" -czf "$work/runtime.tar.gz" .
    mkdir -p #{home}
    tar -C #{home} -xzf "$work/runtime.tar.gz"
    (cd #{home} && find lib -type f -exec sha256sum {} + > MANIFEST)
    rm -rf "$work"
  SH
  creates "#{home}/MANIFEST"
end

file "#{home}/bin-runtime" do
  mode '0755'
  content "#!/bin/sh\necho bench runtime $(wc -l < #{home}/MANIFEST) files\n"
end
