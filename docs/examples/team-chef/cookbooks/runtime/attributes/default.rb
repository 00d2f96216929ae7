default['runtime']['version'] = '17'
default['runtime']['home'] = '/opt/runtime'
default['runtime']['heap'] = '256m'
