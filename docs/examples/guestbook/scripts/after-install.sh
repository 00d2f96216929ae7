# Enable the service on first install so images baked with this package start it at boot.
if [ "$1" -eq 1 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl enable guestbook.service >/dev/null 2>&1 || :
fi
