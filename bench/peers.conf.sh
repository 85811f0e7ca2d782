# Peers known to run_peers.sh (sourced by bash).
#
#   peer NAME PORT HELLO READY SETTLE COMMAND
#
#   NAME     label used in result files and tables
#   PORT     127.0.0.1 port the server listens on ({port} in COMMAND is replaced)
#   HELLO    line the loadgen sends after connecting; {n} = unique name ('' = nothing)
#   READY    regex a received line must match before the connection is ready;
#            {n} = the name, regex-quoted ('' = don't wait)
#   SETTLE   seconds to pause after all connections are ready
#   COMMAND  server command line (a string, run via bash -c with exec), started
#            pinned to the server core with the open-files limit raised
#
#   front_ends NAME OPTIONS
#
#   OPTIONS  added to NAME's command for the cells whose receivers are spread
#            over front ends (fanmix): {frames}, {web} and {irc} are the
#            ports of chatservice's frame, WebSocket and IRC front ends,
#            PORT + 100, 200 and 300. A peer without them skips those cells.
#
# $BENCH is the bench/ directory and $ROOT the checkout it is in. Add a
# server with one more `peer` line, here or in a separate file passed with
# `run_peers.sh -f FILE` after this one.
#
# The Python peers run with the checkout's virtual environment (.venv, made by
# the README's quickstart), so that they and chatservice use one Twisted.

peer seedgo        19001 ''    'You are' 1 "$BENCH/bin/seedgo {port}"
peer naive_twisted 19002 '{n}' ''        1 "$ROOT/.venv/bin/python $BENCH/peers/naive_twisted.py {port}"
peer asyncio       19003 '{n}' ''        1 "$ROOT/.venv/bin/python $BENCH/peers/asyncio_chat.py {port}"
peer asyncio_drain 19004 '{n}' ''        1 "$ROOT/.venv/bin/python $BENCH/peers/asyncio_chat.py {port} --drain"
peer limit_c       19005 ''    ''        1 "$BENCH/bin/limit_c {port}"

# chatservice's per-address protections would measure themselves, not the
# server: all the load comes from 127.0.0.1 and the senders run in a closed
# loop. They are raised out of the way; --resume-grace 0 holds no sessions
# between churn cycles; the timeouts keep idle connections through a run;
# --max-line 8192 lets slowbig's 4 KiB lines through. Everything else is at
# its default (docs/performance.md).
CHAT_OPTIONS="--max-clients 20000 --max-per-ip 20000 --max-connect-rate 1000000 --flood-rate 1000000 --flood-burst 1000000 --resume-grace 0 --idle-timeout 3600 --register-timeout 600 --max-line 8192"

# chatservice_peer NAME PORT CHECKOUT [MORE OPTIONS]: chatservice as installed
# in CHECKOUT/.venv. A second checkout (another version, for a before/after
# comparison) gets a line of its own in a file passed with -f, e.g.
#   chatservice_peer before 19011 /tmp/cs-before
#
# Its frame, WebSocket and IRC front ends are added for the cells that use
# them (fanmix), on the peer's port plus 100, 200 and 300 (run_peers.sh),
# so that a checkout from before they existed still runs the other cells.
chatservice_peer() {
  peer "$1" "$2" '/nick {n}' 'Welcome, {n}!' 1 \
    "$3/.venv/bin/twistd -n --pidfile= chat --port tcp:{port}:interface=127.0.0.1 $CHAT_OPTIONS ${4:-}"
  front_ends "$1" "--frames tcp:{frames}:interface=127.0.0.1 --web tcp:{web}:interface=127.0.0.1 --irc tcp:{irc}:interface=127.0.0.1"
}

chatservice_peer chatservice 19010 "$ROOT"
