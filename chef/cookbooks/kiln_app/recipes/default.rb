#
# Cookbook:: kiln_app
# Recipe:: default
#
# The whole bake in four steps; each one fails the chef run (and so the bake) on error.
include_recipe 'kiln_app::repo'
include_recipe 'kiln_app::install'
include_recipe 'kiln_app::service'
include_recipe 'kiln_app::smoke'
