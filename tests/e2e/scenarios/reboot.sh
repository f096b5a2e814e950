#!/bin/sh
# Lab timing check: boot 1 creates one guest and reboots Dom0 at once; boot 2 only reports.
. "$XENLAB_SHARE/e2e/lib.sh"
if [ "$BOOT" = 1 ]; then
  echo "EXPECT-BOOTS 2"
  mkdir -p /etc/xen/guests
  write_guest /etc/xen/guests alpha
  t=$(now)
  check reboot.create "xl create of a PV guest" xl create -q /etc/xen/guests/alpha.cfg
  figure xl_create "$(since "$t")" s
  figure boot1.uptime_at_reboot "$(cut -d' ' -f1 /proc/uptime)" s
  echo "SCENARIO-END 1"
  sync
  reboot -f
else
  check reboot.clean "only Domain-0 after the reboot" [ "$(domains | tr '\n' ' ')" = "Domain-0 " ]
  figure boot2.uptime_at_scenario "$(cut -d' ' -f1 /proc/uptime)" s
  echo "SCENARIO-END 2"
fi
