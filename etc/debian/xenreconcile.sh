#!/bin/sh
# xenreconcile(8) for the command line on Debian, installed as
# /usr/local/sbin/xenreconcile: the program in /opt/xenreconcile with Debian's
# configuration file, so that "xenreconcile status" or "xenreconcile hold NAME"
# reach the state the running daemon uses.  -c or XENRECONCILE_CONFIG still
# name another file.
: "${XENRECONCILE_CONFIG:=/etc/xenreconcile.yaml}"
export XENRECONCILE_CONFIG
exec /opt/xenreconcile/bin/xenreconcile "$@"
