"""Running an installed lab day to day: reads the install dir through ``builder.host`` and
``builder.install``; nothing below imports this package.

``status``  `labbuild status`: each service's container, health and models
``check``   `labbuild check`: testinfra checks of every service
"""
