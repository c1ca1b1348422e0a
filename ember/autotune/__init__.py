"""Tuning per device, separate from building: `ember tune` searches schedules
with MetaSchedule and records them in a tuning database (`database.py`);
`ember compile --db` applies them."""
