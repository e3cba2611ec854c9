# Sourced by the test scripts: `ensure_packages BINARY=PACKAGE ...` installs, with apt-get (and
# sudo when not root), the Debian packages whose binaries are neither on PATH nor in /usr/sbin.
# A BINARY may be a name or an absolute path. Nothing is installed when everything is there.
ensure_packages() {
  local missing=() pair binary package
  for pair in "$@"; do
    binary=${pair%%=*}
    package=${pair#*=}
    if ! command -v "$binary" >/dev/null 2>&1 && ! [[ -x /usr/sbin/$binary ]] &&
      [[ " ${missing[*]} " != *" $package "* ]]; then
      missing+=("$package")
    fi
  done
  if ((${#missing[@]} == 0)); then
    return 0
  fi
  echo "== installing ${missing[*]}"
  local sudo=()
  if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
  fi
  "${sudo[@]}" apt-get update
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y --no-install-recommends "${missing[@]}"
}
