# Enable the service on first install so images baked with this package start it at boot.
# `systemctl enable` only writes symlinks, so it also works in a chroot without systemd running.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl enable hello-web.service >/dev/null 2>&1 || :
fi
