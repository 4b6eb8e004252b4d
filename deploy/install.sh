#!/usr/bin/env bash
# vicirec installer: venv + package, the process AGI wrapper, config, dialplan library, systemd unit.
#
# Idempotent: run it again to upgrade. It never overwrites an existing config, never edits
# extensions.conf, and never starts, enables or reloads anything: it prints those commands.
# It writes only below the paths its options name (each has a default; see --help).
set -euo pipefail

PROG=${0##*/}
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ROOT=/
PREFIX=/opt/vicirec
PYTHON=/usr/bin/python3
AGI_BIN=/var/lib/asterisk/agi-bin
ASTERISK_ETC=/etc/asterisk
CONFIG_DIR=/etc/vicirec
GROUP=""
AST_USER=""
ASTGUICLIENT_CONF=/etc/astguiclient.conf
LOOKUP=auto
SOURCE=$(cd "$SCRIPT_DIR/.." && pwd)
PIP_ARGS=""
WITH_MYSQL=0
SYSTEMD=1
VENV_SYSTEM_SITE=0
LOG_DIR=/var/log/vicirec
STATE_DIR=/var/lib/vicirec
SYSTEMD_DIR=/etc/systemd/system
LOGROTATE_DIR=/etc/logrotate.d
LOGROTATE=1
BIN_DIR=/usr/local/bin
BIN_LINK=1
SERVICE_USER=vicirec
UNIT=vicirec-fastagi.service

usage() {
    cat <<EOF
Usage: $PROG [OPTIONS]

Install vicirec (VICIdial recording control from Asterisk dialplan) on this server.

  --root DIR          stage every file under DIR instead of / (packaging, tests); default /
  --prefix DIR        where the virtualenv lives (DIR/venv); default $PREFIX
  --python PATH       interpreter that creates the venv (its absolute path ends up in the
                      AGI's shebang through the venv); default $PYTHON
  --agi-bin DIR       Asterisk's astagidir, gets vicirec.agi; default $AGI_BIN
  --asterisk-etc DIR  Asterisk's config dir, gets extensions_vicirec.conf and
                      vicirec-examples/; default $ASTERISK_ETC
  --config-dir DIR    gets vicirec.toml (only if absent) and vicirec.toml.example;
                      default $CONFIG_DIR
  --asterisk-user NAME
                      user Asterisk (and so the process AGI) runs as; default: detected
  --group NAME        group Asterisk runs as: may read the config, write logs and audit;
                      default: detected
                      Detection: runuser/rungroup in ASTERISK-ETC/asterisk.conf, else the
                      running asterisk process (not with --root), else root:root when
                      astguiclient.conf exists (VICIdial starts Asterisk as root), else
                      asterisk:asterisk; a runuser without rungroup gets its primary group
  --astguiclient-conf PATH
                      VICIdial's server config; when it exists, a new vicirec.toml gets
                      [agents] lookup = "mysql" and the mysql extra is installed;
                      default $ASTGUICLIENT_CONF
  --lookup auto|http|mysql
                      agent lookup written into a NEW config (an existing one is never
                      changed); auto = mysql when astguiclient.conf exists; default $LOOKUP
  --source DIR        the vicirec source tree to install; default $SOURCE
  --pip-args "ARGS"   extra arguments for pip install, e.g. "--no-index --find-links /w"
  --with-mysql        also install the mysql extra (agents.lookup = "mysql")
  --venv-system-site-packages
                      create the venv with --system-site-packages (use the distribution's
                      python3-requests etc. offline)
  --log-dir DIR       the log directory (2770 root:GROUP); default $LOG_DIR
  --state-dir DIR     the audit trail's directory (2770 root:GROUP); default $STATE_DIR
  --logrotate-dir DIR gets the logrotate file 'vicirec'; default $LOGROTATE_DIR
  --no-logrotate      do not install the logrotate file
  --systemd-dir DIR   gets $UNIT; default $SYSTEMD_DIR
  --no-systemd        do not install the systemd unit or create the vicirec user
  --bin-dir DIR       gets the 'vicirec' command (a symlink into the venv); default $BIN_DIR
  --no-bin-link       do not link the 'vicirec' command
  -h, --help          show this help

What it does:
  * creates PREFIX/venv with --python and pip-installs vicirec into it
  * writes AGI-BIN/vicirec.agi (mode 0755), a short Python file whose shebang is the venv's
    absolute interpreter with -I (never /usr/bin/env: that can cost 100+ ms per call) and
    which names CONFIG-DIR/vicirec.toml
  * installs CONFIG-DIR/vicirec.toml from the commented template when it does not exist
    (mode 0640, root:GROUP; dir 0750; lookup, log and audit paths as chosen here) and
    refreshes CONFIG-DIR/vicirec.toml.example
  * installs ASTERISK-ETC/extensions_vicirec.conf and ASTERISK-ETC/vicirec-examples/, and prints
    the one '#include extensions_vicirec.conf' line to add to extensions.conf
  * creates LOG-DIR and STATE-DIR (2770 root:GROUP) and LOGROTATE-DIR/vicirec
  * links BIN-DIR/vicirec to PREFIX/venv/bin/vicirec
  * installs SYSTEMD-DIR/$UNIT and creates the system user '$SERVICE_USER'
    (not with --no-systemd; the user only when run as root without --root)

With --root, files land under DIR but every path written INTO them (the AGI's shebang, the
unit's ExecStart) names the final location. The venv itself is created in place under DIR, so
its own scripts (DIR/PREFIX/venv/bin/*) name DIR: rebuild the venv on the target, or run the
installer there, before using the FastAGI daemon from a staged tree.
EOF
}

say() { printf '%s: %s\n' "$PROG" "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() { printf '%s: error: %s\n' "$PROG" "$*" >&2; exit 1; }

need_value() {
    if [ "$#" -lt 2 ] || [ -z "$2" ]; then
        die "option $1 needs a value (see --help)"
    fi
}

while [ "$#" -gt 0 ]; do
    opt=$1
    case "$opt" in
        --*=*)
            set -- "${opt%%=*}" "${opt#*=}" "${@:2}"
            continue
            ;;
    esac
    case "$opt" in
        -h|--help) usage; exit 0 ;;
        --root) need_value "$@"; ROOT=$2; shift 2 ;;
        --prefix) need_value "$@"; PREFIX=$2; shift 2 ;;
        --python) need_value "$@"; PYTHON=$2; shift 2 ;;
        --agi-bin) need_value "$@"; AGI_BIN=$2; shift 2 ;;
        --asterisk-etc) need_value "$@"; ASTERISK_ETC=$2; shift 2 ;;
        --config-dir) need_value "$@"; CONFIG_DIR=$2; shift 2 ;;
        --group) need_value "$@"; GROUP=$2; shift 2 ;;
        --asterisk-user) need_value "$@"; AST_USER=$2; shift 2 ;;
        --astguiclient-conf) need_value "$@"; ASTGUICLIENT_CONF=$2; shift 2 ;;
        --lookup) need_value "$@"; LOOKUP=$2; shift 2 ;;
        --log-dir) need_value "$@"; LOG_DIR=$2; shift 2 ;;
        --state-dir) need_value "$@"; STATE_DIR=$2; shift 2 ;;
        --logrotate-dir) need_value "$@"; LOGROTATE_DIR=$2; shift 2 ;;
        --no-logrotate) LOGROTATE=0; shift ;;
        --systemd-dir) need_value "$@"; SYSTEMD_DIR=$2; shift 2 ;;
        --bin-dir) need_value "$@"; BIN_DIR=$2; shift 2 ;;
        --no-bin-link) BIN_LINK=0; shift ;;
        --source) need_value "$@"; SOURCE=$2; shift 2 ;;
        --pip-args) [ "$#" -ge 2 ] || die "option --pip-args needs a value"; PIP_ARGS=$2; shift 2 ;;
        --with-mysql) WITH_MYSQL=1; shift ;;
        --venv-system-site-packages) VENV_SYSTEM_SITE=1; shift ;;
        --no-systemd) SYSTEMD=0; shift ;;
        *) usage >&2; die "unknown option: $opt" ;;
    esac
done

# ---- checks ------------------------------------------------------------------------------------

for var in PREFIX AGI_BIN ASTERISK_ETC CONFIG_DIR LOG_DIR STATE_DIR LOGROTATE_DIR SYSTEMD_DIR BIN_DIR \
        ASTGUICLIENT_CONF; do
    case "${!var}" in
        *[[:space:]]*) die "--$(tr 'A-Z_' 'a-z-' <<<"$var") must not contain whitespace (it ends up in a shebang or unit)" ;;
        *[!A-Za-z0-9_./+@:-]*) die "--$(tr 'A-Z_' 'a-z-' <<<"$var") may hold only letters, digits and _ . / + @ : -" ;;
        /*) ;;
        *) die "--$(tr 'A-Z_' 'a-z-' <<<"$var") must be an absolute path, not '${!var}'" ;;
    esac
done
case "$LOOKUP" in
    auto|http|mysql) ;;
    *) die "--lookup must be auto, http or mysql, not '$LOOKUP'" ;;
esac
for var in GROUP AST_USER; do
    case "${!var}" in
        *[!A-Za-z0-9_.-]*) die "--$(tr 'A-Z_' 'a-z-' <<<"$var" | sed 's/^ast-/asterisk-/') '${!var}' is not a user or group name" ;;
    esac
done
case "$ROOT" in
    /*) ;;
    *) ROOT="$(pwd)/$ROOT" ;;
esac
ROOT=${ROOT%/}
STAGING=0
if [ -n "$ROOT" ]; then STAGING=1; fi
IS_ROOT=0
if [ "$(id -u)" -eq 0 ]; then IS_ROOT=1; fi

SOURCE=$(cd "$SOURCE" 2>/dev/null && pwd) || die "--source: no such directory"
if [ ! -f "$SOURCE/pyproject.toml" ] || [ ! -d "$SOURCE/agi/vicirec" ]; then
    die "$SOURCE does not look like the vicirec source tree (no pyproject.toml / agi/vicirec)"
fi
for f in dialplan/extensions_vicirec.conf deploy/vicirec.toml.example deploy/$UNIT deploy/vicirec.logrotate; do
    [ -f "$SOURCE/$f" ] || die "missing $SOURCE/$f"
done
command -v "$PYTHON" >/dev/null 2>&1 || die "--python: $PYTHON not found"
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
    || die "$PYTHON is older than Python 3.9"
"$PYTHON" -c 'import venv' 2>/dev/null \
    || die "$PYTHON has no venv module (Debian/Ubuntu: apt-get install python3-venv)"

# staged path of a final absolute path
r() { printf '%s%s' "$ROOT" "$1"; }

# ---- who Asterisk runs as, and which agent lookup ------------------------------------------------

# value of KEY in the [options] section of asterisk.conf (empty when unset or commented out)
asterisk_conf_option() {
    awk -v want="$2" '
        /^[[:space:]]*\[/ { section = $0; gsub(/[][[:space:]]/, "", section); next }
        section != "options" || /^[[:space:]]*;/ { next }
        {
            line = $0; sub(/;.*/, "", line)
            eq = index(line, "="); if (eq == 0) next
            key = substr(line, 1, eq - 1); gsub(/[[:space:]]/, "", key)
            if (key != want) next
            value = substr(line, eq + 1); sub(/^>/, "", value); gsub(/[[:space:]]/, "", value)
            print value; exit
        }' "$1"
}

VICIDIAL=0
if [ -f "$(r "$ASTGUICLIENT_CONF")" ]; then VICIDIAL=1; fi
IDENTITY_SOURCE="--asterisk-user/--group"
if [ -z "$AST_USER" ] || [ -z "$GROUP" ]; then
    found_user="" found_group=""
    ast_conf=$(r "$ASTERISK_ETC/asterisk.conf")
    if [ -f "$ast_conf" ]; then
        found_user=$(asterisk_conf_option "$ast_conf" runuser)
        found_group=$(asterisk_conf_option "$ast_conf" rungroup)
        if [ -n "$found_user" ] && [ -z "$found_group" ]; then
            found_group=$(id -gn "$found_user" 2>/dev/null || printf '%s' "$found_user")
        fi
        if [ -n "$found_user$found_group" ]; then IDENTITY_SOURCE="runuser/rungroup in $ASTERISK_ETC/asterisk.conf"; fi
    fi
    if [ -z "$found_user$found_group" ] && [ "$STAGING" -eq 0 ] && command -v ps >/dev/null 2>&1; then
        read -r found_user found_group < <(ps -C asterisk -o user= -o group= 2>/dev/null | head -n 1) || true
        if [ -n "$found_user" ]; then IDENTITY_SOURCE="the running asterisk process"; fi
    fi
    if [ -z "$found_user$found_group" ] && [ "$VICIDIAL" -eq 1 ]; then
        found_user=root found_group=root
        IDENTITY_SOURCE="VICIdial ($ASTGUICLIENT_CONF exists; its boot script starts Asterisk as root)"
    fi
    if [ -z "$found_user$found_group" ]; then
        found_user=asterisk found_group=asterisk
        IDENTITY_SOURCE="the default (nothing says otherwise)"
    fi
    if [ -z "$AST_USER" ] && [ -n "$GROUP" ] && [ "$IDENTITY_SOURCE" = "the default (nothing says otherwise)" ]; then
        found_user=$GROUP  # --group root alone: Asterisk runs as root
        IDENTITY_SOURCE="--group $GROUP"
    fi
    AST_USER=${AST_USER:-${found_user:-$found_group}}
    GROUP=${GROUP:-${found_group:-$AST_USER}}
fi
if [ "$LOOKUP" = auto ]; then
    if [ "$VICIDIAL" -eq 1 ]; then LOOKUP=mysql; else LOOKUP=http; fi
fi
if [ "$LOOKUP" = mysql ]; then WITH_MYSQL=1; fi
say "Asterisk runs as $AST_USER:$GROUP (from $IDENTITY_SOURCE)"

group_exists() { getent group "$GROUP" >/dev/null 2>&1; }

# chgrp only where it can work; say once when it cannot
GROUP_WARNED=0
set_group() {
    if [ "$IS_ROOT" -eq 1 ] && group_exists; then
        chown "root:$GROUP" "$@"
    elif [ "$GROUP_WARNED" -eq 0 ]; then
        GROUP_WARNED=1
        if [ "$IS_ROOT" -eq 0 ]; then
            warn "not root: leaving group ownership alone; later run: chgrp $GROUP <file> for the files listed below"
        else
            warn "group '$GROUP' does not exist here: files keep group root; fix with chgrp $GROUP once it exists"
        fi
    fi
}

# install_file MODE SRC DEST: copy atomically (temp file + rename), only when the content changed
install_file() {
    local mode=$1 src=$2 dest=$3 tmp
    mkdir -p "$(dirname "$dest")"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        chmod "$mode" "$dest"
        return 0
    fi
    tmp=$(mktemp "$dest.XXXXXX")
    cat "$src" >"$tmp"
    chmod "$mode" "$tmp"
    mv -f "$tmp" "$dest"
}

WORK=$(mktemp -d "${TMPDIR:-/tmp}/vicirec-install.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

umask 022

# ---- virtualenv + package -------------------------------------------------------------------

VENV_FINAL="$PREFIX/venv"
VENV=$(r "$VENV_FINAL")
VENV_PY="$VENV/bin/python3"
if [ -x "$VENV_PY" ] && "$VENV_PY" -c 'import sys' >/dev/null 2>&1; then
    say "using the existing virtualenv $VENV"
else
    venv_args=()
    if [ "$VENV_SYSTEM_SITE" -eq 1 ]; then venv_args+=(--system-site-packages); fi
    if [ -e "$VENV" ]; then
        say "recreating the broken virtualenv $VENV"
        venv_args+=(--clear)
    else
        say "creating the virtualenv $VENV with $PYTHON"
    fi
    mkdir -p "$(dirname "$VENV")"
    "$PYTHON" -m venv "${venv_args[@]}" "$VENV"
fi

# Build from a private copy: pip builds in-tree and would leave build/ and *.egg-info behind in
# the source (which may be read-only, or a checkout other people work in).
mkdir -p "$WORK/src"
(
    cd "$SOURCE"
    set -- pyproject.toml agi
    for extra in setup.py setup.cfg MANIFEST.in README.md README.rst LICENSE LICENSE.txt; do
        if [ -e "$extra" ]; then set -- "$@" "$extra"; fi
    done
    tar --exclude=__pycache__ --exclude='*.egg-info' --exclude='*.pyc' -cf - "$@"
) | tar -C "$WORK/src" -xf -
if grep -Eq '^readme *= *"README.md"' "$WORK/src/pyproject.toml" && [ ! -e "$WORK/src/README.md" ]; then
    printf 'vicirec\n' >"$WORK/src/README.md"
fi

pip_extra=()
if [ -n "$PIP_ARGS" ]; then
    read -r -a pip_extra <<<"$PIP_ARGS"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1
say "building vicirec"
"$VENV_PY" -m pip wheel --quiet --no-deps "${pip_extra[@]}" --wheel-dir "$WORK/wheels" "$WORK/src"
wheels=("$WORK"/wheels/vicirec-*.whl)
[ -f "${wheels[0]}" ] || die "pip built no vicirec wheel"
extras=""
if [ "$WITH_MYSQL" -eq 1 ]; then extras="[mysql]"; fi
say "installing vicirec into $VENV"
# first the dependencies (kept when already satisfied), then vicirec itself again: an unchanged
# version number would otherwise leave the previously installed code in place
"$VENV_PY" -m pip install --quiet --upgrade "${pip_extra[@]}" "${wheels[0]}$extras"
"$VENV_PY" -m pip install --quiet --force-reinstall --no-deps "${pip_extra[@]}" "${wheels[0]}"
"$VENV_PY" -I -c 'import vicirec' || die "vicirec does not import in $VENV"
if ! agi_import_error=$("$VENV_PY" -I -c 'import vicirec.process_agi' 2>&1); then
    warn "vicirec.process_agi does not import yet: ${agi_import_error##*$'\n'}"
fi
if [ "$WITH_MYSQL" -eq 1 ] && ! "$VENV_PY" -I -c 'import pymysql' >/dev/null 2>&1; then
    warn "--with-mysql: PyMySQL is not importable in the venv (check --pip-args)"
fi

# ---- process AGI wrapper ------------------------------------------------------------------------

INTERP="$VENV_FINAL/bin/python3"
shebang="#!$INTERP -I"
if [ "${#shebang}" -ge 127 ]; then
    warn "shebang '$shebang' is long: kernels before 5.1 cut it at 127 bytes"
fi
cat >"$WORK/vicirec.agi" <<EOF
$shebang
# vicirec process AGI. Written by deploy/install.sh: re-run the installer instead of editing.
import os; os.environ.setdefault("VICIREC_CONFIG", "$CONFIG_DIR/vicirec.toml")
from vicirec.process_agi import main
raise SystemExit(main())
EOF
AGI_FILE=$(r "$AGI_BIN/vicirec.agi")
install_file 0755 "$WORK/vicirec.agi" "$AGI_FILE"
say "wrote $AGI_FILE (interpreter $INTERP, config $CONFIG_DIR/vicirec.toml)"

# ---- config ------------------------------------------------------------------------------------

CONF_DIR_STAGED=$(r "$CONFIG_DIR")
CONF_FILE="$CONF_DIR_STAGED/vicirec.toml"
mkdir -p "$CONF_DIR_STAGED"
chmod 0750 "$CONF_DIR_STAGED"
set_group "$CONF_DIR_STAGED"
install_file 0644 "$SOURCE/deploy/vicirec.toml.example" "$CONF_DIR_STAGED/vicirec.toml.example"
HTTP_LIMITS="over lookup = \"http\" the non-agent API names no phone, uniqueid or channel: a call
    parked into an IVR (call id in CALLERID(name)) cannot be corroborated and gets NO_AGENT while
    require_corroboration = true, and bridge_peer finds nobody; the agent's ConfBridge room
    (session) and an agent the dialplan names still work"
if [ -e "$CONF_FILE" ]; then
    say "kept the existing $CONF_FILE (compare with vicirec.toml.example next to it)"
    if [ "$VICIDIAL" -eq 1 ] && grep -Eq '^[[:space:]]*lookup[[:space:]]*=[[:space:]]*"http"' "$CONF_FILE"; then
        say "note: $ASTGUICLIENT_CONF exists but that config keeps lookup = \"http\": $HTTP_LIMITS." \
            "Set lookup = \"mysql\" there to find them."
    fi
else
    # the template with the lookup and the paths chosen here (each edit checked: the template may move on)
    sed_args=(-e "s|^lookup = \"http\"|lookup = \"$LOOKUP\"|"
              -e "s|^astguiclient_conf = \"/etc/astguiclient.conf\"|astguiclient_conf = \"$ASTGUICLIENT_CONF\"|"
              -e "s|^path = \"/var/log/vicirec/|path = \"$LOG_DIR/|"
              -e "s|^path = \"/var/lib/vicirec/|path = \"$STATE_DIR/|")
    ( umask 027; sed "${sed_args[@]}" "$SOURCE/deploy/vicirec.toml.example" >"$CONF_FILE.new" )
    for want in "lookup = \"$LOOKUP\"" "path = \"$LOG_DIR/"; do
        grep -Fq "$want" "$CONF_FILE.new" || warn "could not set '$want...' in $CONF_FILE: check it by hand"
    done
    chmod 0640 "$CONF_FILE.new"
    set_group "$CONF_FILE.new"
    mv -f "$CONF_FILE.new" "$CONF_FILE"
    say "installed $CONF_FILE from the template: set [vicidial] api_url, user and password"
    if [ "$LOOKUP" = mysql ]; then
        say "agent lookup: mysql (VICIdial's database, credentials from $ASTGUICLIENT_CONF): finds the" \
            "agent of a parked call by its call id, corroborated by uniqueid/channel, and by the phone" \
            "bridged with the caller"
    else
        say "agent lookup: http (no $ASTGUICLIENT_CONF here): $HTTP_LIMITS." \
            "On a VICIdial server use --lookup mysql (or lookup = \"mysql\" in the config)."
    fi
fi
if [ "$LOOKUP" = mysql ] && [ -f "$(r "$ASTGUICLIENT_CONF")" ]; then
    perms=$(stat -c '%a' "$(r "$ASTGUICLIENT_CONF")")
    if [ $(( 0$perms & 04 )) -eq 0 ]; then
        warn "$ASTGUICLIENT_CONF is not readable by every user (mode $perms): the process AGI ($AST_USER)" \
            "and the daemon (user $SERVICE_USER, group $GROUP) must read it for lookup = \"mysql\""
    fi
fi

# ---- dialplan ----------------------------------------------------------------------------------

AST_ETC_STAGED=$(r "$ASTERISK_ETC")
LIB="$AST_ETC_STAGED/extensions_vicirec.conf"
if [ -f "$LIB" ] && ! cmp -s "$SOURCE/dialplan/extensions_vicirec.conf" "$LIB"; then
    backup="$LIB.$(date +%Y%m%d%H%M%S).bak"
    cp -p "$LIB" "$backup"
    say "the installed extensions_vicirec.conf differed: saved it as $backup"
fi
install_file 0644 "$SOURCE/dialplan/extensions_vicirec.conf" "$LIB"
mkdir -p "$AST_ETC_STAGED/vicirec-examples"
if [ -d "$SOURCE/dialplan/examples" ]; then
    for f in "$SOURCE"/dialplan/examples/*; do
        [ -f "$f" ] || continue
        install_file 0644 "$f" "$AST_ETC_STAGED/vicirec-examples/${f##*/}"
    done
fi
say "installed $LIB and $AST_ETC_STAGED/vicirec-examples/"

# ---- log and state directories -----------------------------------------------------------------

for d in "$LOG_DIR" "$STATE_DIR"; do
    mkdir -p "$(r "$d")"
    set_group "$(r "$d")"
    chmod 2770 "$(r "$d")"
done
if [ "$LOGROTATE" -eq 1 ]; then
    # the shipped file names the default directories and asterisk:asterisk
    sed -e "s|^/var/log/vicirec/|$LOG_DIR/|" -e "s|^/var/lib/vicirec/|$STATE_DIR/|" \
        -e "s|^\([[:space:]]*su root\) asterisk\$|\1 $GROUP|" \
        -e "s|^\([[:space:]]*create 0660\) asterisk asterisk\$|\1 $AST_USER $GROUP|" \
        "$SOURCE/deploy/vicirec.logrotate" >"$WORK/vicirec.logrotate"
    install_file 0644 "$WORK/vicirec.logrotate" "$(r "$LOGROTATE_DIR")/vicirec"
fi

# ---- the vicirec command on PATH -----------------------------------------------------------------

VICIREC_CMD="$VENV_FINAL/bin/vicirec"
if [ "$BIN_LINK" -eq 1 ]; then
    LINK=$(r "$BIN_DIR/vicirec")
    if [ -L "$LINK" ] || [ ! -e "$LINK" ]; then
        current=$(readlink "$LINK" 2>/dev/null || true)
        case "$current" in
            ""|*/venv/bin/vicirec)
                mkdir -p "$(dirname "$LINK")"
                ln -sfn "$VICIREC_CMD" "$LINK"
                VICIREC_CMD=vicirec
                say "linked $LINK -> $VENV_FINAL/bin/vicirec"
                ;;
            *) warn "$LINK points to $current, not a vicirec venv: left alone" ;;
        esac
    else
        warn "$LINK exists and is not a symlink: left alone (use $VICIREC_CMD)"
    fi
fi

# ---- systemd -----------------------------------------------------------------------------------

if [ "$SYSTEMD" -eq 1 ]; then
    # the unit names the default paths; follow --prefix / --config-dir / --group
    sed -e "s|/opt/vicirec/venv/|$VENV_FINAL/|g" \
        -e "s|/etc/vicirec/vicirec.toml|$CONFIG_DIR/vicirec.toml|g" \
        -e "s|^SupplementaryGroups=asterisk\$|SupplementaryGroups=$GROUP|" \
        -e "s|^ReadWritePaths=/var/log/vicirec /var/lib/vicirec\$|ReadWritePaths=$LOG_DIR $STATE_DIR|" \
        "$SOURCE/deploy/$UNIT" >"$WORK/$UNIT"
    UNIT_FILE=$(r "$SYSTEMD_DIR")/$UNIT
    UNIT_UPGRADE=0
    if [ -f "$UNIT_FILE" ]; then UNIT_UPGRADE=1; fi
    install_file 0644 "$WORK/$UNIT" "$UNIT_FILE"
    say "installed $(r "$SYSTEMD_DIR")/$UNIT"
    if getent passwd "$SERVICE_USER" >/dev/null 2>&1; then
        :
    elif [ "$IS_ROOT" -eq 1 ] && [ "$STAGING" -eq 0 ]; then
        nologin=/usr/sbin/nologin
        if [ ! -x "$nologin" ]; then nologin=/sbin/nologin; fi
        useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" \
            --shell "$nologin" --comment "vicirec FastAGI daemon" "$SERVICE_USER"
        say "created the system user $SERVICE_USER"
    else
        warn "system user '$SERVICE_USER' does not exist; create it on the target:" \
            "useradd --system --user-group --no-create-home --home-dir $STATE_DIR --shell /usr/sbin/nologin $SERVICE_USER"
    fi
fi

# ---- what the admin does next ------------------------------------------------------------------

EXT_CONF="$AST_ETC_STAGED/extensions.conf"
CHECK_AS="sudo -u $AST_USER "
if [ "$AST_USER" = root ]; then CHECK_AS=""; fi
cat <<EOF

vicirec is installed. Next steps (nothing was started, enabled or edited for you):

 1. Edit $CONFIG_DIR/vicirec.toml ([vicidial] api_url, user, password), then check it as the
    Asterisk user ($AST_USER):
        $CHECK_AS$VICIREC_CMD check --config $CONFIG_DIR/vicirec.toml
EOF
if [ -f "$EXT_CONF" ] && grep -Eq '^[[:space:]]*#include[[:space:]]+"?extensions_vicirec\.conf"?' "$EXT_CONF"; then
    echo " 2. $ASTERISK_ETC/extensions.conf already includes extensions_vicirec.conf."
else
    cat <<EOF
 2. Add this one line to $ASTERISK_ETC/extensions.conf (outside any context, e.g. at the end):
        #include extensions_vicirec.conf
EOF
fi
cat <<EOF
    then: asterisk -rx "dialplan reload"
    Use it as Gosub(vicirec,start,1(_CONSENT,3)), Gosub(vicirec,stop,1(3)), Gosub(vicirec,status,1()).
    Examples: $ASTERISK_ETC/vicirec-examples/
EOF
if [ "$SYSTEMD" -eq 1 ] && [ "$UNIT_UPGRADE" -eq 1 ]; then
    cat <<EOF
 3. Restart the FastAGI daemon so it runs this version (the library relies on its claim):
        systemctl daemon-reload && systemctl try-restart $UNIT
    (not enabled yet? systemctl enable --now $UNIT: the library uses it first)
EOF
elif [ "$SYSTEMD" -eq 1 ]; then
    cat <<EOF
 3. Enable the FastAGI daemon: the library sends calls to agi://127.0.0.1:4573/vicirec (about
    3 ms of CPU a call) and runs the process AGI vicirec.agi (about 0.2 s) only while it is down:
        systemctl daemon-reload
        systemctl enable --now $UNIT
EOF
else
    cat <<EOF
 3. No FastAGI daemon (--no-systemd): the library tries agi://127.0.0.1:4573/vicirec first and
    runs vicirec.agi when it is refused. To skip that try (and Asterisk's two warnings per call),
    add to the [globals] of extensions.conf:  VICIREC_AGI=vicirec.agi
EOF
fi
