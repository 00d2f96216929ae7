#
# Cookbook:: kiln_app
# Recipe:: smoke
#
# The app must answer before the image is made. A check that still fails after its retries
# fails the chef run, and with it the bake: no image.
service_name = kiln_app['service']
smoke = kiln_app['smoke']
checks = []
checks << "systemctl is-active --quiet #{service_name}" if service_name && !service_name.to_s.empty?
checks.concat(Array(smoke['commands']))
package_name = kiln_required('package')

# A check that passes at once changes nothing (a converge of a healthy instance reports 0
# updates); one that fails is run again with retries while the app starts.
checks.each_with_index do |check, index|
  execute "smoke check #{index + 1}/#{checks.length}: #{check}" do
    command check
    not_if check
    retries smoke['retries'].to_i
    retry_delay smoke['retry_delay'].to_i
    live_stream true
  end
end

log "kiln_app: #{checks.length} smoke check(s) passed for #{package_name}" do
  level :info
end
