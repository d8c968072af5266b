"""What SQL Server / Azure SQL login errors mean, in words a support engineer can act on.

Why a table: LOGIN_FAILED is only useful with the meaning of the error number and, for 18456,
of its state. The server tells the client state 1 for most 18456 failures on purpose (the real
state is in the server's error log), so state 1 says "look at the server log", not "unknown".
"""

from __future__ import annotations

LOGIN_FAILED_STATES: dict[int, str] = {
    1: "generic state sent to clients; the real reason is in the server's error log",
    2: "the user name does not exist",
    5: "the user name does not exist",
    6: "a Windows login name was used with SQL Server authentication",
    7: "the login is disabled and the password is wrong",
    8: "the password is wrong",
    9: "the password is not valid",
    10: "the password check failed (policy service unreachable)",
    11: "the login is valid but has no access to the server (CONNECT permission or DENY)",
    12: "the login is valid but has no access to the server",
    13: "the SQL Server service is paused",
    16: "the login has no access to the target database",
    18: "the password must be changed",
    38: "the database named in the connection cannot be opened (missing or no access)",
    40: "the login's default database cannot be opened",
    46: "the login's default database cannot be opened",
    58: "SQL authentication is used but the server accepts Windows authentication only",
    62: "a Windows login was used but the server accepts SQL authentication only",
    65: "wrong password for a contained database user",
    102: "Azure AD authentication failed",
    132: "Azure AD (Entra ID) authentication failed: token rejected",
    133: "Azure AD (Entra ID) authentication failed: user not found in the database",
}

ERRORS: dict[int, str] = {
    18456: "login failed",
    18452: "the login comes from an untrusted domain (Windows authentication not accepted)",
    18470: "the login is disabled",
    18486: "the login is locked out",
    18487: "the password has expired",
    18488: "the password must be changed",
    4060: "the database requested in the login cannot be opened (missing or no access)",
    4064: "the login's default database cannot be opened",
    40532: "the server named in the login (user@server or the gateway's name) cannot be opened",
    40613: "the database is not currently available (failover, scaling or paused); retry",
    40615: "the Azure SQL server firewall does not allow the client's IP address",
    40914: "the Azure SQL server's virtual network rules do not allow the client's subnet",
    47073: "public network access is denied on the Azure SQL server (use a private endpoint)",
    40501: "the service is busy; retry after 10 seconds",
    40197: "the service had an error processing the request; retry",
    49918: "not enough resources to process the request; retry",
    40607: "Windows logins are not supported by Azure SQL Database",
    33155: "Azure AD (Entra ID) authentication is not enabled for this server",
    18401: "the server is in script upgrade or single-user mode",
    17892: "a logon trigger rejected the login",
}


def login_error_meaning(number: int, state: int) -> str:
    """One sentence for an error number (and, for 18456, its state)."""
    base = ERRORS.get(number, f"error {number}")
    if number == 18456:
        detail = LOGIN_FAILED_STATES.get(state)
        if detail:
            return f"{base}: {detail} (state {state})"
        return f"{base} (state {state}; look the state up in the server's error log)"
    return f"{base} (state {state})"
