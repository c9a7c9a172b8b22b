"""The app's side of the contract, from a shell: `submit`, `status`, `cancel` (`commands`), what
they send (`request`), follow (`follow`) and show (`describe`), the local demo (`demo`, its view
in `demo_view`), with the app's own SQL (`queries`). Not needed by the daemon."""
