#!/usr/bin/env bash
# Prints the path of a working Python 3.10 (TFX 1.16 needs 3.10), or explains how to get one.
set -u
candidates=(python3.10)
if command -v pyenv >/dev/null 2>&1; then
  for p in "$(pyenv root)"/versions/3.10*/bin/python3.10; do candidates+=("$p"); done
fi
candidates+=(/usr/bin/python3.10 /usr/local/bin/python3.10)
for p in "${candidates[@]}"; do
  if "$p" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 10))' >/dev/null 2>&1; then
    "$p" -c 'import sys; print(sys.executable)'
    exit 0
  fi
done
cat >&2 <<'MSG'
error: Python 3.10 not found. TFX 1.16 (the pipeline stack) installs only on Python 3.10.
  With pyenv:   pyenv install 3.10.13
  On Debian:    build it with pyenv, or use a python:3.10 base image
Then run the make target again (it also looks under $(pyenv root)/versions/3.10*).
MSG
exit 1
