# Sourced by the fetch-* scripts: the Debian cloud kernel package whose artefacts the tests use.
# Sets pkg (linux-image-REL-cloud-amd64) and ver (the candidate version apt knows).
meta=linux-image-cloud-amd64
pkg=$(apt-cache depends "$meta" | awk '/Depends: linux-image-/{print $2; exit}')
[ -n "$pkg" ] || { echo "$(basename "$0"): apt knows no $meta (run apt-get update)" >&2; exit 1; }
ver=$(apt-cache policy "$pkg" | awk '/Candidate:/{print $2}')
