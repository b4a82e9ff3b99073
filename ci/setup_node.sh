# shellcheck shell=bash
# Source me (`. ci/setup_node.sh`): makes sure `node` on PATH is Node.js >= 20
# (js-libp2p 3.x needs it) and `npm` is there.
#
#   node >= 20 already on PATH (e.g. nodesource's nodejs)  -> used as is
#   older node (Debian 12's nodejs is 18) or a previous run's copy
#       -> node 20 from the npm registry: the package node-linux-<arch>@20 holds the
#          official binary; it is unpacked under $FASTP2P_NODE_PREFIX (default
#          /opt/fastp2p-node20 as root, ~/.cache/fastp2p-node20 otherwise) and put
#          first on PATH. npm stays the one on PATH (Debian's npm runs fine on node 20).
# Needs an npm to bootstrap (ci/install_system_deps.sh installs Debian's nodejs + npm
# when there is none). Returns non-zero when no node >= 20 could be had.

_fp_node_say() { printf '[setup_node] %s\n' "$*"; }
_fp_node_major() { node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

_fp_setup_node() {
    local want=20 prefix arch pkg bin
    if [[ $(id -u) -eq 0 ]]; then
        prefix="${FASTP2P_NODE_PREFIX:-/opt/fastp2p-node$want}"
    else
        prefix="${FASTP2P_NODE_PREFIX:-$HOME/.cache/fastp2p-node$want}"
    fi
    case "$(uname -m)" in
        x86_64) arch=x64 ;;
        aarch64) arch=arm64 ;;
        armv7l) arch=armv7l ;;
        ppc64le) arch=ppc64le ;;
        s390x) arch=s390x ;;
        *) arch="" ;;
    esac
    pkg="node-linux-$arch"
    bin="$prefix/node_modules/$pkg/bin"

    if command -v node >/dev/null 2>&1 && (( $(_fp_node_major) >= want )); then
        _fp_node_say "node $(node --version) at $(command -v node)"
    elif [[ -n "$arch" && -x "$bin/node" ]] && (( $("$bin/node" -p 'process.versions.node.split(".")[0]') >= want )); then
        export PATH="$bin:$PATH"
        _fp_node_say "node $(node --version) from an earlier run: $bin"
    else
        if ! command -v npm >/dev/null 2>&1; then
            _fp_node_say "ERROR: need Node.js >= $want and npm; no npm to fetch it with (apt-get install nodejs npm)"
            return 1
        fi
        if [[ -z "$arch" ]]; then
            _fp_node_say "ERROR: node $(node --version 2>/dev/null || echo none) is too old and $(uname -m) has no node-linux-* package"
            return 1
        fi
        _fp_node_say "node $(node --version 2>/dev/null || echo none) < $want: installing $pkg@$want from the npm registry into $prefix"
        mkdir -p "$prefix"
        npm install --prefix "$prefix" --no-save --no-audit --no-fund --loglevel=error "$pkg@$want" >/dev/null
        export PATH="$bin:$PATH"
        hash -r
        if (( $(_fp_node_major) < want )); then
            _fp_node_say "ERROR: node is still $(node --version 2>/dev/null || echo missing)"
            return 1
        fi
        _fp_node_say "node $(node --version) at $(command -v node)"
    fi
    if ! command -v npm >/dev/null 2>&1; then
        _fp_node_say "ERROR: npm not found (apt-get install npm)"
        return 1
    fi
    _fp_node_say "npm $(npm --version 2>/dev/null) at $(command -v npm)"
}

_fp_setup_node
