module KilnApp
  # Reading node['kiln_app'] with one clear failure for anything missing.
  module Helpers
    # An RPM's version and release never contain '-', so the last two fields are exact.
    PACKAGE_PATTERN = /\A(?<name>.+)-(?<version>[^-]+)-(?<release>[^-]+)\z/

    def kiln_app
      node['kiln_app']
    end

    def kiln_required(*path)
      value = path.reduce(kiln_app) { |section, key| section.nil? ? nil : section[key] }
      if value.nil? || value.to_s.empty?
        raise "kiln_app: node['kiln_app']['#{path.join("']['")}'] is not set in node.json"
      end
      value
    end

    # The primary key fingerprints in an armored key file, read by gpg in a throwaway home.
    def kiln_key_fingerprints(path)
      require 'tmpdir'
      listing = Dir.mktmpdir('kiln-key') do |home|
        shell_out!('gpg', '--batch', '--homedir', home, '--with-colons', '--import-options',
                   'show-only', '--import', path).stdout
      end
      primary = false
      listing.each_line.each_with_object([]) do |line, found|
        kind = line.split(':', 2).first
        found << line.split(':')[9].upcase if kind == 'fpr' && primary
        primary = kind == 'pub'
      end
    end

    # { name:, version:, release: } of node['kiln_app']['package'].
    def kiln_package
      text = kiln_required('package')
      match = PACKAGE_PATTERN.match(text)
      raise "kiln_app: package #{text.inspect} is not <name>-<version>-<release>" unless match
      { name: match[:name], version: match[:version], release: match[:release] }
    end
  end
end

Chef::DSL::Recipe.include(KilnApp::Helpers)
