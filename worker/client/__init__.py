"""The app's side of the contract, from a shell: `submit`, `status`, `cancel` (`commands`) and
the local demo (`demo`), with the app's own SQL (`queries`). Not needed by the daemon."""
