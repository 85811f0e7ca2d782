"""The built-in commands and front ends, found by the plugin scan like any other."""

from chatservice.accountcommands import (  # noqa: F401 - found by the plugin scan
    dropaccount_command,
    identify_command,
    password_command,
    register_command,
    unregister_command,
)
from chatservice.frontends.frames import frames  # noqa: F401 - found by the scan
from chatservice.frontends.irc import irc_front_end  # noqa: F401 - found by the scan
from chatservice.frontends.lines import lines  # noqa: F401 - found by the scan
from chatservice.historycommands import (  # noqa: F401 - found by the scan
    history_command,
    search_command,
)
from chatservice.moderation import (  # noqa: F401 - found by the plugin scan
    ban_command,
    bans_command,
    kick_command,
    oper_command,
    stats_command,
    unban_command,
    wall_command,
)
from chatservice.resume import resume_command  # noqa: F401 - found by the scan
from chatservice.usercommands import (  # noqa: F401 - found by the plugin scan
    away_command,
    help_command,
    join_command,
    me_command,
    msg_command,
    nick_command,
    ping_command,
    quit_command,
    rooms_command,
    topic_command,
    users_command,
    who_command,
)
