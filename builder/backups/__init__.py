"""Backups and restores of an installed lab (and the snapshots taken before upgrades).
Stands on ``builder.host``; imports nothing of the build side, nor of ``install`` or ``operate``.

``backupfile``   the backup file format: members, backup.json, the one-pass writer, verification
``backupcrypt``  backups sealed to an X25519 key (chunked AES-GCM), streaming
``backup``       `labbuild backup`/`backups`: capture by method (volume: engine archive API; exec: dump)
``hostvolume``   when a volume's host directory may be read with GNU tar instead (root, local engine)
``restore``      `labbuild restore`: verify, fit, replace volumes / feed dumps, health
``snapshots``    snapshots before upgrades, retention, what rollback must restore (one-way migrations)
"""
