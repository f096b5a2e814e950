#!/bin/sh
# Smoke scenario: proves the lab's plumbing (boot, toolstack, 9p share, the project's venv,
# guest payload, results, Dom0 reboot) with a stand-in reconciler, a shell loop that runs
# `xl create` for every guest cfg whose guest is not listed. It does not test xenreconcile.
. "$XENLAB_SHARE/e2e/lib.sh"
GUESTS_DIR=/etc/xen/guests
VENV=$XENLAB_SHARE/venv
say "smoke scenario, boot $BOOT"

start_standin() {
  cat > /usr/local/sbin/standin-reconcile <<'LOOP'
#!/bin/sh
while true; do
  for f in /etc/xen/guests/*.cfg; do
    name=$(sed -n 's/^name *= *"\(.*\)"/\1/p' "$f")
    xl list | awk 'NR > 1 { print $1 }' | grep -qx "$name" || xl create -q "$f"
  done
  sleep 1
done
LOOP
  chmod 755 /usr/local/sbin/standin-reconcile
  start-stop-daemon --start --background --make-pidfile --pidfile /run/standin.pid \
    --startas /usr/local/sbin/standin-reconcile
}

wait_all_running() {
  t0=$(now)
  start_standin
  if wait_until 120 all_listed alpha bravo charlie; then
    figure "boot$BOOT.standin_start_to_all_running" "$(since "$t0")" s
    pass "smoke.boot$BOOT.create all three guests listed"
  else
    fail "smoke.boot$BOOT.create guests listed: $(domains | tr '\n' ' ')"
  fi
}

if [ "$BOOT" = 1 ]; then
  echo "EXPECT-BOOTS 2"
  check smoke.venv "the project's venv imports xenreconcile and its deps in Dom0" \
    "$VENV/bin/python" -c 'import xenreconcile, structlog, yaml, pyinotify'
  info "venv: $("$VENV/bin/python" -c 'import sys; print(sys.version.split()[0], sys.prefix)')"
  info "xenreconcile --version: $("$VENV/bin/xenreconcile" --version 2>&1 | tail -1)"
  mkdir -p $GUESTS_DIR
  for g in alpha bravo charlie; do write_guest $GUESTS_DIR $g; done
  wait_all_running
  check smoke.console "every guest console shows the hello line" \
    wait_until 60 sh -c '. "$XENLAB_SHARE/e2e/lib.sh"; console_has_hello alpha && console_has_hello bravo && console_has_hello charlie'
  old=$(domid_of bravo)
  xl destroy bravo
  t0=$(now)
  if wait_until 60 sh -c "xl domid bravo >/dev/null 2>&1 && [ \"\$(xl domid bravo)\" != $old ]"; then
    figure boot1.standin_destroy_to_recreated "$(since "$t0")" s
    pass "smoke.recreate destroyed guest recreated"
  else
    fail "smoke.recreate destroyed guest not recreated"
  fi
  xl list
  echo "SCENARIO-END 1"
  save_logs
  sync
  say "rebooting Dom0"
  reboot -f
else
  check smoke.boot2.empty "after the Dom0 reboot only Domain-0 is listed" \
    [ "$(domains | tr '\n' ' ')" = "Domain-0 " ]
  wait_all_running
  start-stop-daemon --stop --pidfile /run/standin.pid --remove-pidfile
  # the guest payload powers off when xl asks (its /sbin/poweroff), and sysrq works
  check smoke.shutdown "xl shutdown -w of a guest returns and the guest is gone" \
    sh -c 'timeout 60 xl shutdown -w alpha && ! xl domid alpha >/dev/null 2>&1'
  check smoke.shutdown.console "the guest's console shows its poweroff" \
    grep -q GUEST-POWEROFF /var/log/xen/console/guest-alpha.log
  xl sysrq bravo c
  check smoke.crash "xl sysrq c crashes a guest (on_crash destroy: it goes away)" \
    wait_until 30 sh -c '! xl domid bravo >/dev/null 2>&1'
  xl list
  echo "SCENARIO-END $BOOT"
  save_logs
fi
