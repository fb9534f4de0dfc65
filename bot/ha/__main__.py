"""``python -m bot.ha > docs/roles.md``: draw the role diagram from the table."""

from bot.ha.table import render_roles_md

print(render_roles_md(), end="")
