# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_uacregd_global_optspecs
    string join \n c/config= db= sip-listen= advertised-addr= rpc-listen= metrics-listen= rpc-token= show-secrets log= log-format= h/help V/version
end

function __fish_uacregd_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_uacregd_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_uacregd_using_subcommand
    set -l cmd (__fish_uacregd_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c uacregd -n "__fish_uacregd_needs_command" -s c -l config -d 'TOML configuration file' -r -F
complete -c uacregd -n "__fish_uacregd_needs_command" -l db -d 'Database URL (default sqlite://uacreg.db): sqlite://path, postgres://user:pw@host/db, mysql://user:pw@host/db. UACREG_DB keeps a password out of the process list' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l sip-listen -d 'SIP listen address (default 0.0.0.0:5062)' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l advertised-addr -d 'host:port for Via and for rows without contact_addr' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l rpc-listen -d 'JSON-RPC listen address (default 127.0.0.1:5063)' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l metrics-listen -d 'Prometheus endpoint address (default 127.0.0.1:5064; "" switches it off)' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l rpc-token -d 'Require this token on every RPC request (Authorization: Bearer …); env UACREG_TOKEN' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l log -d 'Log filter (tracing syntax), e.g. `info`, `uacreg=debug`. RUST_LOG wins if set' -r
complete -c uacregd -n "__fish_uacregd_needs_command" -l log-format -d 'Log lines as text for people, or as JSON objects (one a line) for log shippers' -r -f -a "text\t'`2025-01-01T00:00:00Z  INFO message key=value`, coloured only on a terminal'
json\t'`{"timestamp":…,"level":"INFO","message":…,"key":…,"target":…}`: the event\'s fields at the top level, never colour codes'"
complete -c uacregd -n "__fish_uacregd_needs_command" -l show-secrets -d 'Show passwords and HA1 in RPC answers'
complete -c uacregd -n "__fish_uacregd_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uacregd -n "__fish_uacregd_needs_command" -s V -l version -d 'Print version'
complete -c uacregd -n "__fish_uacregd_needs_command" -f -a "run" -d 'Run the gateway (the default)'
complete -c uacregd -n "__fish_uacregd_needs_command" -f -a "generate" -d 'Print the man page or a shell completion script (for packagers: scripts/gen-docs)'
complete -c uacregd -n "__fish_uacregd_needs_command" -f -a "demo" -d 'Self-contained demo: a test registrar on loopback, N rows in a fresh SQLite file, the gateway registering them, and the resulting table'
complete -c uacregd -n "__fish_uacregd_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -s c -l config -d 'TOML configuration file' -r -F
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l db -d 'Database URL (default sqlite://uacreg.db): sqlite://path, postgres://user:pw@host/db, mysql://user:pw@host/db. UACREG_DB keeps a password out of the process list' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l sip-listen -d 'SIP listen address (default 0.0.0.0:5062)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l advertised-addr -d 'host:port for Via and for rows without contact_addr' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l rpc-listen -d 'JSON-RPC listen address (default 127.0.0.1:5063)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l metrics-listen -d 'Prometheus endpoint address (default 127.0.0.1:5064; "" switches it off)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l rpc-token -d 'Require this token on every RPC request (Authorization: Bearer …); env UACREG_TOKEN' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l log -d 'Log filter (tracing syntax), e.g. `info`, `uacreg=debug`. RUST_LOG wins if set' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l log-format -d 'Log lines as text for people, or as JSON objects (one a line) for log shippers' -r -f -a "text\t'`2025-01-01T00:00:00Z  INFO message key=value`, coloured only on a terminal'
json\t'`{"timestamp":…,"level":"INFO","message":…,"key":…,"target":…}`: the event\'s fields at the top level, never colour codes'"
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -l show-secrets -d 'Show passwords and HA1 in RPC answers'
complete -c uacregd -n "__fish_uacregd_using_subcommand run" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -s c -l config -d 'TOML configuration file' -r -F
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l db -d 'Database URL (default sqlite://uacreg.db): sqlite://path, postgres://user:pw@host/db, mysql://user:pw@host/db. UACREG_DB keeps a password out of the process list' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l sip-listen -d 'SIP listen address (default 0.0.0.0:5062)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l advertised-addr -d 'host:port for Via and for rows without contact_addr' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l rpc-listen -d 'JSON-RPC listen address (default 127.0.0.1:5063)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l metrics-listen -d 'Prometheus endpoint address (default 127.0.0.1:5064; "" switches it off)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l rpc-token -d 'Require this token on every RPC request (Authorization: Bearer …); env UACREG_TOKEN' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l log -d 'Log filter (tracing syntax), e.g. `info`, `uacreg=debug`. RUST_LOG wins if set' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l log-format -d 'Log lines as text for people, or as JSON objects (one a line) for log shippers' -r -f -a "text\t'`2025-01-01T00:00:00Z  INFO message key=value`, coloured only on a terminal'
json\t'`{"timestamp":…,"level":"INFO","message":…,"key":…,"target":…}`: the event\'s fields at the top level, never colour codes'"
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -l show-secrets -d 'Show passwords and HA1 in RPC answers'
complete -c uacregd -n "__fish_uacregd_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l rows -d 'Number of rows to register' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l demo-db -d 'Database file for the demo (created fresh)' -r -F
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l timeout -d 'Give up waiting for registrations after this many seconds' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -s c -l config -d 'TOML configuration file' -r -F
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l db -d 'Database URL (default sqlite://uacreg.db): sqlite://path, postgres://user:pw@host/db, mysql://user:pw@host/db. UACREG_DB keeps a password out of the process list' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l sip-listen -d 'SIP listen address (default 0.0.0.0:5062)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l advertised-addr -d 'host:port for Via and for rows without contact_addr' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l rpc-listen -d 'JSON-RPC listen address (default 127.0.0.1:5063)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l metrics-listen -d 'Prometheus endpoint address (default 127.0.0.1:5064; "" switches it off)' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l rpc-token -d 'Require this token on every RPC request (Authorization: Bearer …); env UACREG_TOKEN' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l log -d 'Log filter (tracing syntax), e.g. `info`, `uacreg=debug`. RUST_LOG wins if set' -r
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l log-format -d 'Log lines as text for people, or as JSON objects (one a line) for log shippers' -r -f -a "text\t'`2025-01-01T00:00:00Z  INFO message key=value`, coloured only on a terminal'
json\t'`{"timestamp":…,"level":"INFO","message":…,"key":…,"target":…}`: the event\'s fields at the top level, never colour codes'"
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l keep-running -d 'Keep running after the table is printed (stop with Ctrl-C)'
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -l show-secrets -d 'Show passwords and HA1 in RPC answers'
complete -c uacregd -n "__fish_uacregd_using_subcommand demo" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uacregd -n "__fish_uacregd_using_subcommand help; and not __fish_seen_subcommand_from run generate demo help" -f -a "run" -d 'Run the gateway (the default)'
complete -c uacregd -n "__fish_uacregd_using_subcommand help; and not __fish_seen_subcommand_from run generate demo help" -f -a "generate" -d 'Print the man page or a shell completion script (for packagers: scripts/gen-docs)'
complete -c uacregd -n "__fish_uacregd_using_subcommand help; and not __fish_seen_subcommand_from run generate demo help" -f -a "demo" -d 'Self-contained demo: a test registrar on loopback, N rows in a fresh SQLite file, the gateway registering them, and the resulting table'
complete -c uacregd -n "__fish_uacregd_using_subcommand help; and not __fish_seen_subcommand_from run generate demo help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
