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
# SBOMs (build side only; not in LIMITS: the runbook lists what install reads). Real images hold
# about 1-30 MiB of package metadata and 100-5,000 packages (Debian: up to ~3,000 debs; the largest
# npm trees a few thousand). Bytes count a file's size, its path and 512 (its tar header).
MAX_SBOM_METADATA_BYTES = 64 * MiB        # one package-metadata file read from an image layer
MAX_SBOM_LAYER_BYTES = 128 * MiB          # the metadata files read from one layer
MAX_SBOM_IMAGE_BYTES = 256 * MiB          # the metadata files an image's merged layers hold at once
MAX_SBOM_TAR_HEADER_BYTES = 256 * 1024    # the pax/GNU extended headers of one layer member together,
                                          # and a layer's global pax headers (real: under 9 KiB;
                                          # Linux caps an xattr value at 64 KiB)
MAX_SBOM_JSON_VALUES = 100_000            # values and keys of one package.json (real: a few hundred);
                                          # json.loads holds ~25x the bytes of "[{},{},...]"
MAX_SBOM_LAYER_COMPONENTS = 10_000        # packages taken from one layer's metadata
MAX_SBOM_IMAGE_COMPONENTS = 20_000        # packages in one SBOM: cyclonedx-python-lib renders each in
                                          # ~1 ms and ~25 KB, so 20,000 cost ~25 s and ~550 MB
MAX_SBOM_WARNINGS = 100                   # warnings listed per SBOM (the rest are counted)
MAX_KEY_BYTES = 16 << 10           # a PEM key file (--key, --sign, --recipient, --identity); keys are < 1 KiB
MAX_HELPER_OUTPUT_BYTES = 1 * MiB  # what a Docker credential helper prints, stdout and stderr each
MAX_DOCKER_CONFIG_BYTES = 1 * MiB  # the Docker config.json credentials are read from
MAX_TAG_PAGES = 1000               # pages of one repository's tag list (`Link: rel="next"`) read by `outdated`
MAX_TAG_PAGE_BYTES = 16 * MiB      # one page of a tag list (a registry that ignores `n` sends every tag at once)
# (the five above are not in LIMITS either: a line more in the runbook would change
# every bundle, and recorded releases must rebuild bit for bit)

# The bundle files outside images/blobs/, all together (not in LIMITS either, for the same reason).
# Each one is held in memory by the reader that needs it, and install writes them all into
# DIR/releases/, so MAX_SMALL_FILE_BYTES alone let 30 files of 60 MiB (an 8 MB gzip of zeros)
# cost 2 GB. Refused from manifest.json's sizes before reading, and again while reading (a
# member bigger than manifest.json says, or the running total over the cap, stops the pass).
MAX_SMALL_FILES_TOTAL_BYTES = 64 * MiB  # every non-blob file but the SBOMs; a release's come to ~0.2 MiB,
                                        # an image bundle's (docker-load and OCI indexes) under 1 MiB
MAX_SBOMS_TOTAL_BYTES = 256 * MiB       # the SBOM documents (sbom/*.cdx.json), apart: one per image and
                                        # platform at ~0.65 KiB a package, real images 100 to a few thousand
                                        # packages (<= 3 MiB; the build side stops at 20,000, ~13 MiB), so
                                        # they outgrow the rest with images x platforms. 256 MiB is 80+
                                        # documents of 3 MiB. `sbom`, `diff` and install hold them; verify
                                        # and export hash them only

# The front door (issue 23; not in LIMITS either, for the same reason): the provider's user file
# in DIR/access/ (argon2id hashes ~100 bytes a user: 8 MiB is tens of thousands of users) and the
# release's access/lab.json (roles, projects, services: a few KiB).
MAX_USERS_FILE_BYTES = 8 * MiB
MAX_ACCESS_JSON_BYTES = 1 * MiB

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
