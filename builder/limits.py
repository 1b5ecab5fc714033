"""Every size and count limit on what labbuild reads, in one place.

Inputs come from people (blueprints, lab.toml), from other machines (lockfiles,
release records) and from the wire or a USB stick (bundles). Each reader caps
what it will hold in memory or report, so a tiny hostile file cannot make
labbuild use gigabytes or minutes. The runbook README repeats these figures
(``builder/templates/runbooks/README.md``; a test keeps them in step).
"""

MiB = 1 << 20

MAX_BLUEPRINT_BYTES = 1 * MiB      # one blueprints/services/*.toml, or lab.toml
MAX_LOCK_BYTES = 64 * MiB          # lockfiles/lab.lock.json
MAX_RECORD_BYTES = 64 * MiB        # one lockfiles/releases/*.json
MAX_MANIFEST_BYTES = 16 * MiB      # a bundle's manifest.json
MAX_SUMS_BYTES = 16 * MiB          # a bundle's SHA256SUMS
MAX_SMALL_FILE_BYTES = 64 * MiB    # any other bundle file that is not an image blob (held in memory)
MAX_MEMBERS = 200_000              # members of a bundle archive
MAX_PROBLEMS = 200                 # problems reported by one verification (the rest are counted)
MAX_ENV_BYTES = 1 * MiB            # an install's DIR/.env
MAX_NESTING = 64                   # depth of nested tables/arrays in TOML and JSON inputs
MAX_SBOM_METADATA_BYTES = 64 * MiB # one package-metadata file read from an image layer for its SBOM
                                   # (build side only; not in LIMITS: the runbook lists what install reads)
MAX_KEY_BYTES = 16 << 10           # a PEM key file (--key, --sign, --recipient, --identity); keys are < 1 KiB
MAX_HELPER_OUTPUT_BYTES = 1 * MiB  # what a Docker credential helper prints, stdout and stderr each
MAX_DOCKER_CONFIG_BYTES = 1 * MiB  # the Docker config.json credentials are read from
MAX_TAG_PAGES = 1000               # pages of one repository's tag list (`Link: rel="next"`) read by `outdated`
MAX_TAG_PAGE_BYTES = 16 * MiB      # one page of a tag list (a registry that ignores `n` sends every tag at once)
# (the five above are not in LIMITS either: a line more in the runbook would change
# every bundle, and recorded releases must rebuild bit for bit)

LIMITS = {
    "blueprint or lab.toml": MAX_BLUEPRINT_BYTES,
    "lockfile": MAX_LOCK_BYTES,
    "release record": MAX_RECORD_BYTES,
    "bundle manifest.json": MAX_MANIFEST_BYTES,
    "bundle SHA256SUMS": MAX_SUMS_BYTES,
    "other bundle file (not an image blob)": MAX_SMALL_FILE_BYTES,
    "bundle members": MAX_MEMBERS,
    "problems reported per verification": MAX_PROBLEMS,
    "install DIR/.env": MAX_ENV_BYTES,
    "nesting depth of TOML/JSON input": MAX_NESTING,
}
