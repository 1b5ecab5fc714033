"""Installing a bundle on a host. Imports nothing of the build side (blueprint, lock,
registry, blob cache, render): it reads bundles through ``builder.format`` and the read
side of ``builder.bundle`` (``reader``, ``verify``) only, and stands on ``builder.host``.

``doctor``   `labbuild doctor`: the offline preflight (engine, compose, ports, disk, memory, GPU, DIR)
``inputs``   operator-supplied secrets: the preflight before anything is touched; optional services
             that wait for them
``secrets``  secrets generated into DIR/.env (0600), kept across upgrades
``unpack``   verify a bundle while loading its images, stage its small files
``pull``     pulling an online bundle's images by digest before `up`
``models``   placing models into service volumes (the formats table says how), listing them
``apply``    install, upgrade, rollback, uninstall
``targets``  the optional services' scrape targets (file_sd files) once they run
``provision`` [[provision]] calls once a service is healthy (an app's owner account); sign-in passwords shown once
"""
