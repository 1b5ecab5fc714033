"""The install side's ground floor: what installing, backups and operating a lab all stand on.
Imports nothing of the build side, nor of ``install``, ``backups`` or ``operate``.

``engine``   everything that talks to the Docker API: the client (and its one process-wide setting),
             image IDs against the lock, the lab's containers, the streaming load, archive put/get
             and the raw unix-socket PUT with ``sendfile``
``compose``  DIR/compose.yaml (project name, current release, env files, --gpu) and running compose v2
``health``   host-side probes; each service awaited on its own budget, in dependency order
``labdir``   the install dir: releases/, current/previous links, the DIR lock, staging and placing
``dotenv``   DIR/.env: its one reader (capped) and the key/value views every command uses
"""
