"""The accounts stage: `invoke bootstrap` creates and updates the support stacks in every account
Kiln works in (build, prod, keys, app environments), and `bootstrap.verify` checks them."""
