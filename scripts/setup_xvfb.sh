#!/usr/bin/env bash
# A real X server for the app's end-to-end test (tests/gui/test_x_workflow.py runs it under
# xvfb-run when present). Best effort: installed with apt-get when this runs as root on a
# Debian-like system; otherwise a note, and that one test is skipped (the same workflow still
# runs on the offscreen platform). QUANTVIZ_NO_APT=1 skips it.
set -u
PKGS="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-cursor0 libxkbcommon-x11-0 libxcb-image0 libxcb-render-util0 libxcb-shape0 libxcb-xinerama0 libxcb-randr0 libxcb-xkb1"
have_libs() {
    command -v xvfb-run >/dev/null 2>&1 || return 1
    for lib in libxcb-icccm.so.4 libxcb-keysyms.so.1 libxcb-cursor.so.0 libxkbcommon-x11.so.0; do
        ldconfig -p 2>/dev/null | grep -q "$lib" || return 1
    done
}
have_libs && exit 0
if [ -n "${QUANTVIZ_NO_APT:-}" ] || [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "note: Xvfb and Qt's xcb libraries are not installed; the X-server workflow test will be skipped" >&2
    exit 0
fi
echo "installing Xvfb and Qt's xcb libraries for the X-server workflow test (apt-get)" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get install -y -q --no-install-recommends $PKGS >/dev/null 2>&1 || \
    { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends $PKGS >/dev/null 2>&1; } || \
    echo "note: could not install Xvfb; the X-server workflow test will be skipped" >&2
exit 0
