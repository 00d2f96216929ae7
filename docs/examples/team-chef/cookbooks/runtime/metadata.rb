name 'runtime'
version '1.0.0'
description 'A team runtime installed before the app: a launcher script and its settings file'
