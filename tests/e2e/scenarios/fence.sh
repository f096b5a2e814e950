#!/bin/sh
# Pool mode's fence on real Xen: xenreconcile-watchdog-feed arms a watchdog slot of Dom0 and
# re-arms the same slot on every later run. Boot 1: fed every W/4 s for 2W s the host stays up;
# then no more feeds, and the hypervisor must reset the machine about W s after the last one.
# Boot 2: the host came back later than W s after the last feed; a feed arms a slot again, and
# --disarm stops it.
# Knob: FENCE_TIMEOUT (W, default 20 s).
. "$XENLAB_SHARE/e2e/lib.sh"
FEED=$XENLAB_SHARE/venv/bin/xenreconcile-watchdog-feed
W=${FENCE_TIMEOUT:-20}
SLOT=/var/run/xenreconcile-watchdog.slot
MARK=/var/lib/xr-fence-e2e # on Dom0's own disk: it outlives the reset
feed() { XR_FENCE_TIMEOUT=$W "$FEED"; }

if [ "$BOOT" = 1 ]; then
  echo "EXPECT-BOOTS 2"
  rm -rf "$MARK" && mkdir -p "$MARK"
  check fence.no_slot "no watchdog slot is recorded before the first feed" [ ! -e "$SLOT" ]
  check fence.arm "the first feed arms a slot (timeout $W s)" feed
  slot=$(cat "$SLOT" 2> /dev/null)
  check fence.slot "the slot's number is recorded: ${slot:-none}" [ -n "$slot" ]
  t=$(now) feeds=0 failed=0
  while awk -v a="$t" -v b="$(now)" -v w="$W" 'BEGIN { exit !(b - a < 2 * w) }'; do
    sleep "$((W / 4))"
    feed || failed=$((failed + 1))
    feeds=$((feeds + 1))
  done
  check fence.fed "fed $feeds times in $(since "$t") s, none failed, the host stayed up" [ "$failed" = 0 ]
  check fence.same_slot "every feed re-armed slot $slot" [ "$(cat "$SLOT")" = "$slot" ]
  now > "$MARK/last-feed"
  sync
  say "last feed; the hypervisor should reset the machine in $W s"
  echo "SCENARIO-END 1"
  sleep "$((W * 6))"
  fail "fence.reset the host was still up $((W * 6)) s after the last feed"
  XR_FENCE_TIMEOUT=$W "$FEED" --disarm
  sync
  reboot -f
else
  last=$(cat "$MARK/last-feed")
  booted=$(awk -v n="$(now)" -v u="$(cut -d' ' -f1 /proc/uptime)" 'BEGIN { printf "%.1f", n - u }')
  gap=$(awk -v a="$last" -v b="$booted" 'BEGIN { printf "%.1f", b - a }')
  figure fence.last_feed_to_dom0_boot "$gap" s
  check fence.reset "reset no sooner than W = $W s after the last feed (Dom0 booted $gap s after it)" \
    awk -v g="$gap" -v w="$W" 'BEGIN { exit !(g >= w && g < 10 * w) }'
  # the reset ended every slot; a slot file left from boot 1 (where /var/run is not emptied at
  # boot) names a slot Xen no longer knows, and the feed arms a new one
  check fence.rearm "after the reset a feed arms a slot again" feed
  check fence.disarm "--disarm stops the slot and forgets it" "$FEED" --disarm
  check fence.forgotten "no slot is recorded after --disarm" [ ! -e "$SLOT" ]
  echo "SCENARIO-END 2"
fi
