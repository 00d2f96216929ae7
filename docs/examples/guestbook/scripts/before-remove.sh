# On erase (not upgrade), disable the service so no dangling symlinks remain.
if [ "$1" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
  systemctl --no-reload disable guestbook.service >/dev/null 2>&1 || :
fi
