# The package asked for is in no repository: dnf finds nothing and the run fails.
package 'kiln-probe' do
  version '9.9.9-1'
end
