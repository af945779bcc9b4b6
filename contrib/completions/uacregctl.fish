# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_uacregctl_global_optspecs
    string join \n rpc= token= json h/help V/version
end

function __fish_uacregctl_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_uacregctl_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_uacregctl_using_subcommand
    set -l cmd (__fish_uacregctl_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c uacregctl -n "__fish_uacregctl_needs_command" -l rpc -d 'JSON-RPC endpoint of uacregd' -r
complete -c uacregctl -n "__fish_uacregctl_needs_command" -l token -d 'RPC token, if uacregd requires one' -r
complete -c uacregctl -n "__fish_uacregctl_needs_command" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -s V -l version -d 'Print version'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_dump" -d 'All registrations (uac.reg_dump)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_info" -d 'One registration (uac.reg_info ATTR VALUE); ATTR: l_uuid, l_username, r_username, auth_username'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_reload" -d 'Re-read the table and apply the difference (uac.reg_reload)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_enable" -d 'Enable a registration (uac.reg_enable ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_disable" -d 'Disable a registration, un-registering it (uac.reg_disable ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_refresh" -d 'Re-read one row from the database and register it again (uac.reg_refresh L_UUID)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_register" -d 'Register now (uac.reg_register ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_unregister" -d 'Un-REGISTER now and stay unregistered (uac.reg_unregister ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_lookup" -d 'Local URI of a contact user (l_uuid), or the registration of a local URI (uac.reg_lookup L_UUID | sip:l_username@l_domain)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_active" -d 'Switch sending on (1) or off (0) (uac.reg_active MODE)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_add" -d 'Add a row in memory (uac.reg_add, Kamailio\'s 14 or 15 positional values; `.` = none)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "reg_remove" -d 'Remove a row from memory, un-REGISTERing it (uac.reg_remove L_UUID)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "status" -d 'Counts per state and SIP counters (uacreg.status)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "shutdown" -d 'Stop uacregd gracefully (uacreg.shutdown), with a progress bar while it un-registers'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "cluster" -d 'The cluster as this node sees it: nodes, their shards and last rounds (uacreg.cluster)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "show" -d '`show registrations`: Asterisk-style list (name, server, username, status, expires, code)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "watch" -d 'Redraw the state counts and the registrations that are not registered every few seconds'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "call" -d 'Any method with positional string parameters'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "generate" -d 'Print the man page or a shell completion script (for packagers: scripts/gen-docs)'
complete -c uacregctl -n "__fish_uacregctl_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_dump" -l cluster -d 'Every row of the cluster with the node running it, read from the database by the node asked (uacreg.cluster_dump; states as of the last uacreg_status write)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_dump" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_dump" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_info" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_info" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_reload" -l wait -d 'Then show progress until no row is still on its way to registered (at most 10 min)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_reload" -l force -d 'Apply the table even if it removes more than [database] max_removed_share of the running rows (uac.reg_reload force)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_reload" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_reload" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_enable" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_enable" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_disable" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_disable" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_refresh" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_refresh" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_register" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_register" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_unregister" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_unregister" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_lookup" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_lookup" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_active" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_active" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_add" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_add" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_remove" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand reg_remove" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand status" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand status" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand shutdown" -l unregister -d 'Un-REGISTER every binding even where uacregd would not (unregister_on_shutdown = false, or a cluster node that would hand its rows over to its peers)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand shutdown" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand shutdown" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand cluster" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand cluster" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand show" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand show" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand watch" -l interval -d 'Seconds between refreshes' -r
complete -c uacregctl -n "__fish_uacregctl_using_subcommand watch" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand watch" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand call" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand call" -s h -l help -d 'Print help'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand generate" -l json -d 'Print the raw JSON result'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand generate" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_dump" -d 'All registrations (uac.reg_dump)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_info" -d 'One registration (uac.reg_info ATTR VALUE); ATTR: l_uuid, l_username, r_username, auth_username'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_reload" -d 'Re-read the table and apply the difference (uac.reg_reload)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_enable" -d 'Enable a registration (uac.reg_enable ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_disable" -d 'Disable a registration, un-registering it (uac.reg_disable ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_refresh" -d 'Re-read one row from the database and register it again (uac.reg_refresh L_UUID)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_register" -d 'Register now (uac.reg_register ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_unregister" -d 'Un-REGISTER now and stay unregistered (uac.reg_unregister ATTR VALUE)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_lookup" -d 'Local URI of a contact user (l_uuid), or the registration of a local URI (uac.reg_lookup L_UUID | sip:l_username@l_domain)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_active" -d 'Switch sending on (1) or off (0) (uac.reg_active MODE)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_add" -d 'Add a row in memory (uac.reg_add, Kamailio\'s 14 or 15 positional values; `.` = none)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "reg_remove" -d 'Remove a row from memory, un-REGISTERing it (uac.reg_remove L_UUID)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "status" -d 'Counts per state and SIP counters (uacreg.status)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "shutdown" -d 'Stop uacregd gracefully (uacreg.shutdown), with a progress bar while it un-registers'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "cluster" -d 'The cluster as this node sees it: nodes, their shards and last rounds (uacreg.cluster)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "show" -d '`show registrations`: Asterisk-style list (name, server, username, status, expires, code)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "watch" -d 'Redraw the state counts and the registrations that are not registered every few seconds'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "call" -d 'Any method with positional string parameters'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "generate" -d 'Print the man page or a shell completion script (for packagers: scripts/gen-docs)'
complete -c uacregctl -n "__fish_uacregctl_using_subcommand help; and not __fish_seen_subcommand_from reg_dump reg_info reg_reload reg_enable reg_disable reg_refresh reg_register reg_unregister reg_lookup reg_active reg_add reg_remove status shutdown cluster show watch call generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
