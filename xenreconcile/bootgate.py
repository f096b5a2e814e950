"""Which guests a pass must not create because of the host's shutdown and boot.

Given the config, the desired state and the running boot: every desired guest
while the daemon is stood down (`standdown`), else the guests that have a save
image still to restore or to be looked at (`saves`). The planner gets the result
as its `withheld` input, so it stays pure.
"""

from __future__ import annotations

from xenreconcile import standdown
from xenreconcile.config import Config
from xenreconcile.models import DesiredState
from xenreconcile.saves import SaveStore
from xenreconcile.state import Boot


def withheld(config: Config, desired: DesiredState, boot: Boot) -> dict[str, str]:
    """Guest name -> why it is not created now."""
    if standdown.stood_down(config.state_dir, boot):
        return {guest.name: standdown.REASON for guest in desired.guests}
    return SaveStore(config).withheld(boot)
