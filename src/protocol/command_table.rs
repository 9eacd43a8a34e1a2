//! The command table: every command the server accepts, with its Redis 7.2 metadata (arity, flags,
//! key positions, ACL categories, docs), the `COMMAND` family's replies built from it, the CLI's
//! help text, and the glob matcher that `KEYS`, `SCAN MATCH` and `COMMAND LIST FILTERBY PATTERN` use.
//!
//! One table answers both the server (`COMMAND`, which redis-cli 7 and client libraries ask at start)
//! and the client (`help`, completion), so the two cannot disagree about what exists. Redis commands
//! carry Redis 7.2's own values; ours (`REQ`, `RAW*`, `GETVER`, `SETVER`, `MEMBER`, `LEADER`) follow
//! the same conventions.

use super::resp::Reply;

/// One command's metadata, in the terms Redis's `COMMAND INFO` and `COMMAND DOCS` use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommandSpec {
    /// The name, lower case.
    pub name: &'static str,
    /// Arguments the command takes, its name included: `N` means exactly N, `-N` at least N.
    pub arity: i64,
    /// Redis command flags (`write`, `readonly`, `denyoom`, `fast`, ...), in Redis's reply order.
    pub flags: &'static [&'static str],
    /// Position of the first key argument (the name is 0); 0 when the command takes no key.
    pub first_key: i64,
    /// Position of the last key argument; -1 means the last argument; 0 when no key.
    pub last_key: i64,
    /// Distance between key arguments from `first_key` to `last_key` (2 for `MSET key value ...`);
    /// 0 when no key.
    pub step: i64,
    /// ACL categories without the `@`: the explicit ones plus those Redis derives from the flags
    /// (`write` → write, `readonly` → read, `admin` → admin and dangerous, `fast` or else slow).
    pub acl_categories: &'static [&'static str],
    /// The help group: `string`, `keyspace` (Redis's `generic`), `transactions`, `connection`,
    /// `server`, or `cluster` (ours, for membership).
    pub group: &'static str,
    /// The version that introduced the command (Redis's for Redis commands, ours for ours).
    pub since: &'static str,
    /// Time complexity, as `COMMAND DOCS` states it.
    pub complexity: &'static str,
    /// One sentence saying what the command does.
    pub summary: &'static str,
    /// The usage line: the name upper case, then the arguments in Redis's notation.
    pub syntax: &'static str,
}

/// Every command the server accepts, sorted by name, each name once.
pub const COMMANDS: &[CommandSpec] = &[
    CommandSpec {
        name: "append",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "2.0.0",
        complexity: "O(1). The amortized time complexity is O(1) assuming the appended value is small and \
            the already present value is of any size, since the dynamic string library used by Redis will \
            double the free space available on every reallocation.",
        summary: "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        syntax: "APPEND key value",
    },
    CommandSpec {
        name: "client",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["slow"],
        group: "connection",
        since: "2.4.0",
        complexity: "Depends on subcommand.",
        summary: "A container for client connection commands.",
        syntax: "CLIENT SETNAME connection-name|GETNAME|ID|INFO|LIST|SETINFO LIB-NAME libname|LIB-VER libver",
    },
    CommandSpec {
        name: "command",
        arity: -1,
        flags: &["loading", "stale"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["slow", "connection"],
        group: "server",
        since: "2.8.13",
        complexity: "O(N) where N is the total number of Redis commands",
        summary: "Returns detailed information about all commands.",
        syntax: "COMMAND [COUNT|LIST [FILTERBY MODULE module-name|ACLCAT category|PATTERN pattern]|INFO \
            [command-name ...]|DOCS [command-name ...]|HELP]",
    },
    CommandSpec {
        name: "config",
        arity: -2,
        flags: &[],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["slow"],
        group: "server",
        since: "2.0.0",
        complexity: "Depends on subcommand.",
        summary: "A container for server configuration commands.",
        syntax: "CONFIG GET parameter [parameter ...]",
    },
    CommandSpec {
        name: "dbsize",
        arity: 1,
        flags: &["readonly", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "read", "fast"],
        group: "server",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns the number of keys in the database.",
        syntax: "DBSIZE",
    },
    CommandSpec {
        name: "decr",
        arity: 2,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Decrements the integer value of a key by one. Uses 0 as initial value if the key doesn't \
            exist.",
        syntax: "DECR key",
    },
    CommandSpec {
        name: "decrby",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Decrements a number from the integer value of a key. Uses 0 as initial value if the key \
            doesn't exist.",
        syntax: "DECRBY key decrement",
    },
    CommandSpec {
        name: "del",
        arity: -2,
        flags: &["write"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["keyspace", "write", "slow"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys that will be removed. When a key to remove holds a \
            value other than a string, the individual complexity for this key is O(M) where M is the number \
            of elements in the list, set, sorted set or hash. Removing a single key that holds a string \
            value is O(1).",
        summary: "Deletes one or more keys.",
        syntax: "DEL key [key ...]",
    },
    CommandSpec {
        name: "discard",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "transaction"],
        group: "transactions",
        since: "2.0.0",
        complexity: "O(N), when N is the number of queued commands",
        summary: "Discards a transaction.",
        syntax: "DISCARD",
    },
    CommandSpec {
        name: "echo",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "connection"],
        group: "connection",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns the given string.",
        syntax: "ECHO message",
    },
    CommandSpec {
        name: "exec",
        arity: 1,
        flags: &["noscript", "loading", "stale", "skip_slowlog"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["slow", "transaction"],
        group: "transactions",
        since: "1.2.0",
        complexity: "Depends on commands in the transaction",
        summary: "Executes all commands in a transaction.",
        syntax: "EXEC",
    },
    CommandSpec {
        name: "exists",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys to check.",
        summary: "Determines whether one or more keys exist.",
        syntax: "EXISTS key [key ...]",
    },
    CommandSpec {
        name: "expire",
        arity: -3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Sets the expiration time of a key in seconds.",
        syntax: "EXPIRE key seconds [NX|XX|GT|LT]",
    },
    CommandSpec {
        name: "expireat",
        arity: -3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "1.2.0",
        complexity: "O(1)",
        summary: "Sets the expiration time of a key to a Unix timestamp.",
        syntax: "EXPIREAT key unix-time-seconds [NX|XX|GT|LT]",
    },
    CommandSpec {
        name: "expiretime",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "7.0.0",
        complexity: "O(1)",
        summary: "Returns the expiration time of a key as a Unix timestamp.",
        syntax: "EXPIRETIME key",
    },
    CommandSpec {
        name: "flushall",
        arity: -1,
        flags: &["write"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "write", "slow", "dangerous"],
        group: "server",
        since: "1.0.0",
        complexity: "O(N) where N is the total number of keys in all databases",
        summary: "Removes all keys from all databases.",
        syntax: "FLUSHALL [ASYNC|SYNC]",
    },
    CommandSpec {
        name: "flushdb",
        arity: -1,
        flags: &["write"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "write", "slow", "dangerous"],
        group: "server",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys in the selected database",
        summary: "Remove all keys from the current database.",
        syntax: "FLUSHDB [ASYNC|SYNC]",
    },
    CommandSpec {
        name: "get",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["read", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns the string value of a key.",
        syntax: "GET key",
    },
    CommandSpec {
        name: "getdel",
        arity: 2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "6.2.0",
        complexity: "O(1)",
        summary: "Returns the string value of a key after deleting the key.",
        syntax: "GETDEL key",
    },
    CommandSpec {
        name: "getex",
        arity: -2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "6.2.0",
        complexity: "O(1)",
        summary: "Returns the string value of a key after setting its expiration time.",
        syntax: "GETEX key [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT \
            unix-time-milliseconds|PERSIST]",
    },
    CommandSpec {
        name: "getrange",
        arity: 4,
        flags: &["readonly"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["read", "string", "slow"],
        group: "string",
        since: "2.4.0",
        complexity: "O(N) where N is the length of the returned string. The complexity is ultimately \
            determined by the returned length, but because creating a substring from an existing string is \
            very cheap, it can be considered O(1) for small strings.",
        summary: "Returns a substring of the string stored at a key.",
        syntax: "GETRANGE key start end",
    },
    CommandSpec {
        name: "getset",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns the previous string value of a key after setting it to a new value.",
        syntax: "GETSET key value",
    },
    CommandSpec {
        name: "getver",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["read", "string", "fast"],
        group: "string",
        since: "0.1.0",
        complexity: "O(log(N)) where N is the number of keys",
        summary: "Returns the string value of a key and its version, the log index of its last write.",
        syntax: "GETVER key",
    },
    CommandSpec {
        name: "hello",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "connection"],
        group: "connection",
        since: "6.0.0",
        complexity: "O(1)",
        summary: "Handshakes with the Redis server.",
        syntax: "HELLO [protover [AUTH username password] [SETNAME clientname]]",
    },
    CommandSpec {
        name: "incr",
        arity: 2,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Increments the integer value of a key by one. Uses 0 as initial value if the key doesn't \
            exist.",
        syntax: "INCR key",
    },
    CommandSpec {
        name: "incrby",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Increments the integer value of a key by a number. Uses 0 as initial value if the key \
            doesn't exist.",
        syntax: "INCRBY key increment",
    },
    CommandSpec {
        name: "incrbyfloat",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "2.6.0",
        complexity: "O(1)",
        summary: "Increment the floating point value of a key by a number. Uses 0 as initial value if the \
            key doesn't exist.",
        syntax: "INCRBYFLOAT key increment",
    },
    CommandSpec {
        name: "info",
        arity: -1,
        flags: &["loading", "stale"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["slow", "dangerous"],
        group: "server",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns information and statistics about the server.",
        syntax: "INFO [section [section ...]]",
    },
    CommandSpec {
        name: "keys",
        arity: 2,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "read", "slow", "dangerous"],
        group: "keyspace",
        since: "1.0.0",
        complexity:
            "O(N) with N being the number of keys in the database, under the assumption that the key \
            names in the database and the given pattern have limited length.",
        summary: "Returns all key names that match a pattern.",
        syntax: "KEYS pattern",
    },
    CommandSpec {
        name: "leader",
        arity: 3,
        flags: &["admin", "noscript"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["admin", "slow", "dangerous"],
        group: "cluster",
        since: "0.1.0",
        complexity: "O(1)",
        summary: "Hands leadership to a caught-up voter and answers once it leads.",
        syntax: "LEADER TRANSFER id",
    },
    CommandSpec {
        name: "member",
        arity: -2,
        flags: &["admin", "noscript"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["admin", "slow", "dangerous"],
        group: "cluster",
        since: "0.1.0",
        complexity: "O(N) where N is the number of members",
        summary: "Lists the members of the cluster, or changes them and answers once the change is \
            committed.",
        syntax: "MEMBER LIST|ADD id peer-addr client-addr|PROMOTE id|REMOVE id|CHANGE op [op ...]",
    },
    CommandSpec {
        name: "mget",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["read", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(N) where N is the number of keys to retrieve.",
        summary: "Atomically returns the string values of one or more keys.",
        syntax: "MGET key [key ...]",
    },
    CommandSpec {
        name: "mset",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: -1,
        step: 2,
        acl_categories: &["write", "string", "slow"],
        group: "string",
        since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
        summary: "Atomically creates or modifies the string values of one or more keys.",
        syntax: "MSET key value [key value ...]",
    },
    CommandSpec {
        name: "msetnx",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: -1,
        step: 2,
        acl_categories: &["write", "string", "slow"],
        group: "string",
        since: "1.0.1",
        complexity: "O(N) where N is the number of keys to set.",
        summary: "Atomically modifies the string values of one or more keys only when all keys don't exist.",
        syntax: "MSETNX key value [key value ...]",
    },
    CommandSpec {
        name: "multi",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "transaction"],
        group: "transactions",
        since: "1.2.0",
        complexity: "O(1)",
        summary: "Starts a transaction.",
        syntax: "MULTI",
    },
    CommandSpec {
        name: "persist",
        arity: 2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "2.2.0",
        complexity: "O(1)",
        summary: "Removes the expiration time of a key.",
        syntax: "PERSIST key",
    },
    CommandSpec {
        name: "pexpire",
        arity: -3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "2.6.0",
        complexity: "O(1)",
        summary: "Sets the expiration time of a key in milliseconds.",
        syntax: "PEXPIRE key milliseconds [NX|XX|GT|LT]",
    },
    CommandSpec {
        name: "pexpireat",
        arity: -3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "2.6.0",
        complexity: "O(1)",
        summary: "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        syntax: "PEXPIREAT key unix-time-milliseconds [NX|XX|GT|LT]",
    },
    CommandSpec {
        name: "pexpiretime",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "7.0.0",
        complexity: "O(1)",
        summary: "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        syntax: "PEXPIRETIME key",
    },
    CommandSpec {
        name: "ping",
        arity: -1,
        flags: &["fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "connection"],
        group: "connection",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns the server's liveliness response.",
        syntax: "PING [message]",
    },
    CommandSpec {
        name: "psetex",
        arity: 4,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "slow"],
        group: "string",
        since: "2.6.0",
        complexity: "O(1)",
        summary:
            "Sets both string value and expiration time in milliseconds of a key. The key is created if \
            it doesn't exist.",
        syntax: "PSETEX key milliseconds value",
    },
    CommandSpec {
        name: "pttl",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "2.6.0",
        complexity: "O(1)",
        summary: "Returns the expiration time in milliseconds of a key.",
        syntax: "PTTL key",
    },
    CommandSpec {
        name: "quit",
        arity: -1,
        flags: &["noscript", "loading", "stale", "fast", "no_auth", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "connection"],
        group: "connection",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Closes the connection.",
        syntax: "QUIT",
    },
    CommandSpec {
        name: "randomkey",
        arity: 1,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "read", "slow"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns a random key name from the database.",
        syntax: "RANDOMKEY",
    },
    CommandSpec {
        name: "rawdelete",
        arity: 3,
        flags: &["write", "fast"],
        first_key: 2,
        last_key: 2,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "0.1.0",
        complexity: "O(log(N)) where N is the number of keys in the column family",
        summary: "Deletes a key from a column family (default, write or lock).",
        syntax: "RAWDELETE cf key",
    },
    CommandSpec {
        name: "rawget",
        arity: 3,
        flags: &["readonly", "fast"],
        first_key: 2,
        last_key: 2,
        step: 1,
        acl_categories: &["read", "string", "fast"],
        group: "string",
        since: "0.1.0",
        complexity: "O(log(N)) where N is the number of keys in the column family",
        summary: "Returns the value of a key in a column family (default, write or lock).",
        syntax: "RAWGET cf key",
    },
    CommandSpec {
        name: "rawput",
        arity: 4,
        flags: &["write", "denyoom", "fast"],
        first_key: 2,
        last_key: 2,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "0.1.0",
        complexity: "O(log(N)) where N is the number of keys in the column family",
        summary: "Sets the value of a key in a column family (default, write or lock).",
        syntax: "RAWPUT cf key value",
    },
    CommandSpec {
        name: "rawscan",
        arity: 4,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "read", "slow"],
        group: "keyspace",
        since: "0.1.0",
        complexity: "O(log(N)+M) where N is the number of keys in the column family and M the number of \
            pairs returned",
        summary: "Returns up to limit key-value pairs of a column family whose keys are at or after start, \
            in key order.",
        syntax: "RAWSCAN cf start limit",
    },
    CommandSpec {
        name: "rename",
        arity: 3,
        flags: &["write"],
        first_key: 1,
        last_key: 2,
        step: 1,
        acl_categories: &["keyspace", "write", "slow"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Renames a key and overwrites the destination.",
        syntax: "RENAME key newkey",
    },
    CommandSpec {
        name: "renamenx",
        arity: 3,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: 2,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Renames a key only when the target key name doesn't exist.",
        syntax: "RENAMENX key newkey",
    },
    CommandSpec {
        name: "req",
        arity: -4,
        flags: &["movablekeys"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["slow"],
        group: "connection",
        since: "0.1.0",
        complexity: "Depends on the command.",
        summary:
            "Runs a command at most once per client id and sequence number; a retry gets the remembered \
            reply.",
        syntax: "REQ client-id seq command [arg ...]",
    },
    CommandSpec {
        name: "scan",
        arity: -2,
        flags: &["readonly"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["keyspace", "read", "slow"],
        group: "keyspace",
        since: "2.8.0",
        complexity: "O(1) for every call. O(N) for a complete iteration, including enough command calls for \
            the cursor to return back to 0. N is the number of elements inside the collection.",
        summary: "Iterates over the key names in the database.",
        syntax: "SCAN cursor [MATCH pattern] [COUNT count] [TYPE type]",
    },
    CommandSpec {
        name: "select",
        arity: 2,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "connection"],
        group: "connection",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Changes the selected database.",
        syntax: "SELECT index",
    },
    CommandSpec {
        name: "set",
        arity: -3,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "slow"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Sets the string value of a key, ignoring its type. The key is created if it doesn't exist.",
        syntax: "SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|EXAT unix-time-seconds|PXAT \
            unix-time-milliseconds|KEEPTTL]",
    },
    CommandSpec {
        name: "setex",
        arity: 4,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "slow"],
        group: "string",
        since: "2.0.0",
        complexity: "O(1)",
        summary: "Sets the string value and expiration time of a key. Creates the key if it doesn't exist.",
        syntax: "SETEX key seconds value",
    },
    CommandSpec {
        name: "setnx",
        arity: 3,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Set the string value of a key only when the key doesn't exist.",
        syntax: "SETNX key value",
    },
    CommandSpec {
        name: "setrange",
        arity: 4,
        flags: &["write", "denyoom"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "slow"],
        group: "string",
        since: "2.2.0",
        complexity:
            "O(1), not counting the time taken to copy the new string in place. Usually, this string \
            is very small so the amortized complexity is O(1). Otherwise, complexity is O(M) with M being \
            the length of the value argument.",
        summary: "Overwrites a part of a string value with another by an offset. Creates the key if it \
            doesn't exist.",
        syntax: "SETRANGE key offset value",
    },
    CommandSpec {
        name: "setver",
        arity: 4,
        flags: &["write", "denyoom", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["write", "string", "fast"],
        group: "string",
        since: "0.1.0",
        complexity: "O(log(N)) where N is the number of keys",
        summary:
            "Sets the string value of a key only if its version is still the given one (0: the key must \
            not exist), and returns the new version.",
        syntax: "SETVER key version value",
    },
    CommandSpec {
        name: "snapshot",
        arity: -2,
        flags: &["admin", "noscript"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["admin", "slow", "dangerous"],
        group: "server",
        since: "0.1.0",
        complexity: "O(N) where N is the size of the state",
        summary: "Takes an image of the whole state at a linearizable point and hands it out in \
            chunks (what quorumkv-cli snapshot save uses).",
        syntax: "SNAPSHOT BEGIN|CHUNK token offset|END token",
    },
    CommandSpec {
        name: "strlen",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["read", "string", "fast"],
        group: "string",
        since: "2.2.0",
        complexity: "O(1)",
        summary: "Returns the length of a string value.",
        syntax: "STRLEN key",
    },
    CommandSpec {
        name: "time",
        arity: 1,
        flags: &["loading", "stale", "fast"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast"],
        group: "server",
        since: "2.6.0",
        complexity: "O(1)",
        summary: "Returns the server time.",
        syntax: "TIME",
    },
    CommandSpec {
        name: "touch",
        arity: -2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "3.2.1",
        complexity: "O(N) where N is the number of keys that will be touched.",
        summary: "Returns the number of existing keys out of those specified after updating the time they \
            were last accessed.",
        syntax: "TOUCH key [key ...]",
    },
    CommandSpec {
        name: "ttl",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Returns the expiration time in seconds of a key.",
        syntax: "TTL key",
    },
    CommandSpec {
        name: "type",
        arity: 2,
        flags: &["readonly", "fast"],
        first_key: 1,
        last_key: 1,
        step: 1,
        acl_categories: &["keyspace", "read", "fast"],
        group: "keyspace",
        since: "1.0.0",
        complexity: "O(1)",
        summary: "Determines the type of value stored at a key.",
        syntax: "TYPE key",
    },
    CommandSpec {
        name: "unlink",
        arity: -2,
        flags: &["write", "fast"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["keyspace", "write", "fast"],
        group: "keyspace",
        since: "4.0.0",
        complexity: "O(1) for each key removed regardless of its size. Then the command does O(N) work in a \
            different thread in order to reclaim memory, where N is the number of allocations the deleted \
            objects where composed of.",
        summary: "Asynchronously deletes one or more keys.",
        syntax: "UNLINK key [key ...]",
    },
    CommandSpec {
        name: "unwatch",
        arity: 1,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 0,
        last_key: 0,
        step: 0,
        acl_categories: &["fast", "transaction"],
        group: "transactions",
        since: "2.2.0",
        complexity: "O(1)",
        summary: "Forgets about watched keys of a transaction.",
        syntax: "UNWATCH",
    },
    CommandSpec {
        name: "watch",
        arity: -2,
        flags: &["noscript", "loading", "stale", "fast", "allow_busy"],
        first_key: 1,
        last_key: -1,
        step: 1,
        acl_categories: &["fast", "transaction"],
        group: "transactions",
        since: "2.2.0",
        complexity: "O(1) for every key.",
        summary: "Monitors changes to keys to determine the execution of a transaction.",
        syntax: "WATCH key [key ...]",
    },
];

/// The spec of the command called `name` (any case), or `None` if the server has no such command.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    COMMANDS
        .binary_search_by(|spec| spec.name.bytes().cmp(name.iter().map(u8::to_ascii_lowercase)))
        .ok()
        .map(|index| &COMMANDS[index])
}

/// The command names, lower case, in table order.
pub fn command_names() -> impl Iterator<Item = &'static str> {
    COMMANDS.iter().map(|spec| spec.name)
}

/// The command's line in [`help_text`]: its syntax, ` - `, its summary, and a newline.
pub fn help_line(spec: &CommandSpec) -> String {
    format!("{} - {}\n", spec.syntax, spec.summary)
}

/// One line per command, in table order: its syntax, then its summary.
pub fn help_text() -> String {
    COMMANDS.iter().map(help_line).collect()
}

/// What `help NAME` shows for one command: its syntax, summary, version and group, one per line.
pub fn command_help(spec: &CommandSpec) -> String {
    format!(
        "  {}\n  summary: {}\n  since: {}\n  group: {}\n",
        spec.syntax, spec.summary, spec.since, spec.group
    )
}

/// The group's name as Redis spells it in `COMMAND DOCS` (`generic` for our `keyspace`), so tools
/// that group Redis's help (`redis-cli`'s `help @generic`) find ours in the same place.
fn docs_group(spec: &CommandSpec) -> &'static str {
    match spec.group {
        "keyspace" => "generic",
        other => other,
    }
}

/// A list of status lines, as Redis replies flags and categories.
fn simple_array<'a>(items: impl Iterator<Item = &'a str>) -> Reply {
    Reply::Array(Some(items.map(|item| Reply::Simple(item.to_string())).collect()))
}

/// An empty array, for the `COMMAND INFO` fields this server does not fill in.
fn empty_array() -> Reply {
    Reply::Array(Some(Vec::new()))
}

/// The command's `COMMAND INFO` entry in Redis 7's shape: name, arity, flags, first key, last key,
/// step, ACL categories, then tips, key specs and subcommands (empty here).
pub fn command_info(spec: &CommandSpec) -> Reply {
    Reply::Array(Some(vec![
        Reply::bulk(spec.name),
        Reply::Integer(spec.arity),
        simple_array(spec.flags.iter().copied()),
        Reply::Integer(spec.first_key),
        Reply::Integer(spec.last_key),
        Reply::Integer(spec.step),
        Reply::Array(Some(
            spec.acl_categories.iter().map(|category| Reply::Simple(format!("@{category}"))).collect(),
        )),
        empty_array(),
        empty_array(),
        empty_array(),
    ]))
}

/// The command's `COMMAND DOCS` pair: its name, then its docs as a flat map of bulk strings
/// (`summary`, `since`, `group`, `complexity`), which is what redis-cli 7 reads at start.
pub fn command_docs(spec: &CommandSpec) -> Vec<Reply> {
    let docs = [
        ("summary", spec.summary),
        ("since", spec.since),
        ("group", docs_group(spec)),
        ("complexity", spec.complexity),
    ];
    let map = docs.iter().flat_map(|(field, value)| [Reply::bulk(*field), Reply::bulk(*value)]).collect();
    vec![Reply::bulk(spec.name), Reply::Array(Some(map))]
}

/// The lines `COMMAND HELP` answers.
const COMMAND_HELP_LINES: &[&str] = &[
    "COMMAND <subcommand> [<arg> [value] [opt] ...]. Subcommands are:",
    "(no subcommand)",
    "    Return details about every command.",
    "COUNT",
    "    Return the number of commands.",
    "LIST [FILTERBY MODULE <module-name>|ACLCAT <category>|PATTERN <pattern>]",
    "    Return the names of the commands, optionally only those that pass the filter.",
    "INFO [<command-name> ...]",
    "    Return details about the named commands (all when none is named).",
    "DOCS [<command-name> ...]",
    "    Return the documentation of the named commands (all when none is named).",
    "HELP",
    "    Print this help.",
];

/// Redis's error for a subcommand called with the wrong number of arguments.
fn wrong_arity(subcommand: &str) -> Reply {
    Reply::err(format!("wrong number of arguments for 'command|{subcommand}' command"))
}

/// Whether `spec` passes a `COMMAND LIST FILTERBY kind value` filter; `None` for an unknown kind.
fn passes_filter(spec: &CommandSpec, kind: &[u8], value: &[u8]) -> Option<bool> {
    if kind.eq_ignore_ascii_case(b"module") {
        // No command here comes from a module.
        Some(false)
    } else if kind.eq_ignore_ascii_case(b"aclcat") {
        Some(spec.acl_categories.iter().any(|category| category.as_bytes().eq_ignore_ascii_case(value)))
    } else if kind.eq_ignore_ascii_case(b"pattern") {
        // Redis matches names without regard to case; names are lower case, so a lowered pattern
        // (ranges and escapes included) matches exactly what a case-blind match would.
        Some(glob_match(&value.to_ascii_lowercase(), spec.name.as_bytes()))
    } else {
        None
    }
}

/// The reply to `COMMAND`, given the arguments after the name: all commands' info with none,
/// `COUNT`, `LIST [FILTERBY ...]`, `INFO [name ...]` (a nil element for each unknown name), `DOCS
/// [name ...]` (unknown names left out) and `HELP`; `GETKEYS` and `GETKEYSANDFLAGS` are refused.
pub fn command_reply(args: &[Vec<u8>]) -> Reply {
    let Some((subcommand, rest)) = args.split_first() else {
        return Reply::Array(Some(COMMANDS.iter().map(command_info).collect()));
    };
    let lowered = subcommand.to_ascii_lowercase();
    match lowered.as_slice() {
        b"count" if rest.is_empty() => Reply::Integer(COMMANDS.len() as i64),
        b"count" => wrong_arity("count"),
        b"help" if rest.is_empty() => simple_array(COMMAND_HELP_LINES.iter().copied()),
        b"help" => wrong_arity("help"),
        b"list" => match rest {
            [] => Reply::Array(Some(command_names().map(Reply::bulk).collect())),
            [option, kind, value] if option.eq_ignore_ascii_case(b"filterby") => {
                let mut names = Vec::new();
                for spec in COMMANDS {
                    match passes_filter(spec, kind, value) {
                        Some(true) => names.push(Reply::bulk(spec.name)),
                        Some(false) => {}
                        None => return Reply::err("syntax error"),
                    }
                }
                Reply::Array(Some(names))
            }
            _ => Reply::err("syntax error"),
        },
        b"info" if rest.is_empty() => command_reply(&[]),
        b"info" => Reply::Array(Some(
            rest.iter().map(|name| lookup(name).map_or(Reply::Bulk(None), command_info)).collect(),
        )),
        b"docs" => {
            let docs = if rest.is_empty() {
                COMMANDS.iter().flat_map(command_docs).collect()
            } else {
                rest.iter().filter_map(|name| lookup(name)).flat_map(command_docs).collect()
            };
            Reply::Array(Some(docs))
        }
        b"getkeys" => Reply::err("COMMAND GETKEYS is not supported"),
        b"getkeysandflags" => Reply::err("COMMAND GETKEYSANDFLAGS is not supported"),
        _ => {
            // Redis quotes at most 128 bytes of what it did not recognise.
            let shown = &subcommand[..subcommand.len().min(128)];
            Reply::err(format!("unknown subcommand '{}'. Try COMMAND HELP.", String::from_utf8_lossy(shown)))
        }
    }
}

/// Whether `text` matches the glob `pattern`, as Redis's `KEYS` and `SCAN MATCH` decide it.
///
/// `*` matches any run of bytes, `?` any one byte, `\x` the byte x itself (a trailing `\` matches
/// `\`), and `[...]` one byte from a class: listed bytes, ranges `a-z` (either order: `z-a` is the
/// same range), `\x` for a literal x, `[^...]` for the complement; a class with no closing `]`
/// takes the rest of the pattern. Bytes compare as unsigned values and matching is binary-safe.
///
/// Two edges differ from Redis's C code: a pattern of only stars matches the empty text (Redis says
/// no, but its `KEYS *` and `SCAN` special-case `*`, so clients see a match), and `[^` at the end of
/// the pattern matches any one byte (Redis reads past the pattern there).
///
/// Work is O(pattern × text): only the last star seen is ever retried. That is enough because a
/// later star can absorb whatever a longer match of an earlier one would have consumed.
pub fn glob_match(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    // The pattern position just after the last star, and where in the text that star's match ends.
    let mut restart: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() {
            if pattern[p] == b'*' {
                p += 1;
                if p == pattern.len() {
                    return true;
                }
                restart = Some((p, t));
                continue;
            }
            if let Some(next) = match_one(pattern, p, text[t]) {
                p = next;
                t += 1;
                continue;
            }
        }
        // A mismatch, or pattern left over: let the last star take one more byte and retry.
        let Some((after_star, star_end)) = restart else {
            return false;
        };
        restart = Some((after_star, star_end + 1));
        p = after_star;
        t = star_end + 1;
    }
    pattern[p..].iter().all(|&byte| byte == b'*')
}

/// Where the pattern goes on if its element at `p` (anything but `*`) matches `byte`, or `None`.
fn match_one(pattern: &[u8], p: usize, byte: u8) -> Option<usize> {
    match pattern[p] {
        b'?' => Some(p + 1),
        b'[' => {
            let (matched, next) = match_class(pattern, p + 1, byte);
            matched.then_some(next)
        }
        b'\\' if p + 1 < pattern.len() => (pattern[p + 1] == byte).then_some(p + 2),
        literal => (literal == byte).then_some(p + 1),
    }
}

/// Whether the class starting at `start` (just after its `[`) admits `byte`, and the position after
/// the class: after its `]`, or the pattern's end when it has none.
fn match_class(pattern: &[u8], start: usize, byte: u8) -> (bool, usize) {
    let mut i = start;
    let negated = pattern.get(i) == Some(&b'^');
    if negated {
        i += 1;
    }
    let mut matched = false;
    // Each arm moves `i` forward by at most the bytes left, so `i <= pattern.len()` throughout.
    loop {
        let left = pattern.len() - i;
        match pattern.get(i) {
            None => break,
            Some(b'\\') if left >= 2 => {
                matched |= pattern[i + 1] == byte;
                i += 2;
            }
            Some(b']') => {
                i += 1;
                break;
            }
            // As in Redis, `x-y` is a range whenever two more bytes follow x, even if y is `]`.
            Some(&low) if left >= 3 && pattern[i + 1] == b'-' => {
                let high = pattern[i + 2];
                matched |= (low.min(high)..=low.max(high)).contains(&byte);
                i += 3;
            }
            Some(&listed) => {
                matched |= listed == byte;
                i += 1;
            }
        }
    }
    (matched != negated, i)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every command PRODUCT.md says the server accepts.
    const PRODUCT_COMMANDS: &str =
        "ping quit info echo get set append del exists select client hello command config time \
        setnx setex psetex getset getdel getex mget mset msetnx strlen getrange setrange incr \
        decr incrby decrby incrbyfloat unlink type rename renamenx keys scan dbsize randomkey \
        flushdb flushall touch expire pexpire expireat pexpireat ttl pttl expiretime pexpiretime \
        persist multi exec discard watch unwatch req rawget rawput rawdelete rawscan getver \
        setver member leader snapshot";

    /// The flags Redis 7.2 shows in `COMMAND INFO`, in its order.
    const REDIS_FLAGS: &str =
        "write readonly denyoom module admin pubsub noscript blocking loading stale skip_monitor \
        skip_slowlog asking fast no_auth no_mandatory_keys no_async_loading no_multi movablekeys \
        allow_busy";

    fn redis_flags() -> Vec<&'static str> {
        REDIS_FLAGS.split_whitespace().collect()
    }

    fn spec(name: &str) -> &'static CommandSpec {
        lookup(name.as_bytes()).unwrap_or_else(|| panic!("{name} is in the table"))
    }

    fn args(words: &[&str]) -> Vec<Vec<u8>> {
        words.iter().map(|word| word.as_bytes().to_vec()).collect()
    }

    fn array(reply: Reply) -> Vec<Reply> {
        match reply {
            Reply::Array(Some(items)) => items,
            other => panic!("expected an array, got {other:?}"),
        }
    }

    #[test]
    fn table_is_sorted_unique_and_lower_case() {
        for pair in COMMANDS.windows(2) {
            assert!(pair[0].name < pair[1].name, "{} before {}", pair[0].name, pair[1].name);
        }
        for spec in COMMANDS {
            assert!(
                !spec.name.is_empty() && spec.name.bytes().all(|b| b.is_ascii_lowercase()),
                "{}",
                spec.name
            );
        }
    }

    #[test]
    fn table_holds_exactly_the_product_commands() {
        let mut expected: Vec<&str> = PRODUCT_COMMANDS.split_whitespace().collect();
        expected.sort_unstable();
        assert_eq!(command_names().collect::<Vec<_>>(), expected);
    }

    #[test]
    fn redis_values_for_well_known_commands() {
        let set = spec("set");
        assert_eq!((set.arity, set.first_key, set.last_key, set.step), (-3, 1, 1, 1));
        assert_eq!(set.flags, ["write", "denyoom"]);
        assert_eq!(set.acl_categories, ["write", "string", "slow"]);
        let get = spec("get");
        assert_eq!((get.arity, get.first_key, get.last_key, get.step), (2, 1, 1, 1));
        assert_eq!(get.flags, ["readonly", "fast"]);
        let mset = spec("mset");
        assert_eq!((mset.arity, mset.first_key, mset.last_key, mset.step), (-3, 1, -1, 2));
        let del = spec("del");
        assert_eq!((del.arity, del.first_key, del.last_key, del.step), (-2, 1, -1, 1));
        assert_eq!(del.group, "keyspace");
        let rename = spec("rename");
        assert_eq!((rename.arity, rename.first_key, rename.last_key, rename.step), (3, 1, 2, 1));
        let keys = spec("keys");
        assert_eq!((keys.first_key, keys.last_key, keys.step), (0, 0, 0));
        assert!(keys.acl_categories.contains(&"dangerous"));
        assert_eq!(spec("command").arity, -1);
        assert_eq!(spec("client").arity, -2);
        assert_eq!(spec("ping").since, "1.0.0");
        assert_eq!(spec("getex").since, "6.2.0");
        assert_eq!(spec("multi").group, "transactions");
        assert!(spec("set").syntax.starts_with("SET key value [NX|XX] [GET] [EX seconds|PX milliseconds|"));
    }

    #[test]
    fn our_commands() {
        let req = spec("req");
        assert_eq!(req.arity, -4);
        assert!(req.flags.contains(&"movablekeys"));
        assert_eq!((spec("rawget").arity, spec("rawput").arity, spec("rawdelete").arity), (3, 4, 3));
        assert_eq!(spec("rawscan").arity, 4);
        assert_eq!((spec("getver").arity, spec("setver").arity), (2, 4));
        assert_eq!((spec("member").arity, spec("leader").arity), (-2, 3));
        assert_eq!(spec("member").group, "cluster");
        assert_eq!(spec("rawput").first_key, 2);
    }

    #[test]
    fn every_spec_is_consistent() {
        let groups = ["string", "keyspace", "transactions", "connection", "server", "cluster"];
        let redis_flags = redis_flags();
        for spec in COMMANDS {
            let name = spec.name;
            assert!(spec.arity != 0, "{name}: arity");
            assert!(spec.flags.iter().all(|flag| redis_flags.contains(flag)), "{name}: flags");
            assert!(
                spec.flags.windows(2).all(|pair| {
                    let position = |flag| redis_flags.iter().position(|known| *known == flag);
                    position(pair[0]) < position(pair[1])
                }),
                "{name}: flags out of Redis's order"
            );
            let has = |flag| spec.flags.contains(&flag);
            let in_category = |category| spec.acl_categories.contains(&category);
            assert!(!(has("write") && has("readonly")), "{name}");
            // The categories Redis derives from flags.
            assert_eq!(has("write"), in_category("write"), "{name}: @write");
            assert_eq!(has("readonly"), in_category("read"), "{name}: @read");
            assert_eq!(has("fast"), in_category("fast"), "{name}: @fast");
            assert_eq!(!has("fast"), in_category("slow"), "{name}: @slow");
            if has("admin") {
                assert!(in_category("admin") && in_category("dangerous"), "{name}: @admin");
            }
            assert!(groups.contains(&spec.group), "{name}: group");
            assert!(spec.syntax.starts_with(&name.to_ascii_uppercase()), "{name}: syntax");
            assert!(!spec.summary.is_empty() && !spec.since.is_empty() && !spec.complexity.is_empty());
            if spec.first_key == 0 {
                assert_eq!((spec.last_key, spec.step), (0, 0), "{name}: keys");
            } else {
                assert!(spec.first_key > 0 && spec.step > 0, "{name}: keys");
                assert!(spec.last_key == -1 || spec.last_key >= spec.first_key, "{name}: last key");
                // A key position must exist in every call the arity allows.
                assert!(spec.first_key < spec.arity.abs(), "{name}: first key past the arity");
                if spec.arity > 0 {
                    assert!(spec.last_key < spec.arity, "{name}: last key past the arity");
                }
            }
        }
    }

    #[test]
    fn lookup_ignores_case() {
        assert_eq!(lookup(b"GeT").map(|spec| spec.name), Some("get"));
        assert_eq!(lookup(b"INCRBYFLOAT").map(|spec| spec.name), Some("incrbyfloat"));
        assert!(lookup(b"nosuch").is_none());
        assert!(lookup(b"").is_none());
        assert!(lookup(b"ge").is_none());
        assert!(lookup(b"gett").is_none());
        assert!(lookup(b"G\xc3\x89T").is_none());
        for spec in COMMANDS {
            assert_eq!(lookup(spec.name.to_ascii_uppercase().as_bytes()), Some(spec));
        }
    }

    #[test]
    fn command_count_is_the_table_size() {
        assert_eq!(command_reply(&args(&["COUNT"])), Reply::Integer(COMMANDS.len() as i64));
        assert_eq!(command_reply(&args(&["count"])), Reply::Integer(COMMANDS.len() as i64));
        assert_eq!(
            command_reply(&args(&["count", "x"])),
            Reply::Error("ERR wrong number of arguments for 'command|count' command".to_string())
        );
    }

    #[test]
    fn command_without_arguments_describes_every_command() {
        let all = array(command_reply(&[]));
        assert_eq!(all.len(), COMMANDS.len());
        assert_eq!(all[0], command_info(&COMMANDS[0]));
    }

    #[test]
    fn command_info_has_redis_7_shape() {
        let info = array(command_info(spec("get")));
        assert_eq!(info.len(), 10);
        assert_eq!(info[0], Reply::bulk("get"));
        assert_eq!(info[1], Reply::Integer(2));
        assert_eq!(
            info[2],
            Reply::Array(Some(vec![Reply::Simple("readonly".into()), Reply::Simple("fast".into())]))
        );
        assert_eq!(info[3..6], [Reply::Integer(1), Reply::Integer(1), Reply::Integer(1)]);
        assert_eq!(
            info[6],
            Reply::Array(Some(vec![
                Reply::Simple("@read".into()),
                Reply::Simple("@string".into()),
                Reply::Simple("@fast".into())
            ]))
        );
        for empty in &info[7..10] {
            assert_eq!(*empty, Reply::Array(Some(Vec::new())));
        }
        let mset = array(command_info(spec("mset")));
        assert_eq!(mset[3..6], [Reply::Integer(1), Reply::Integer(-1), Reply::Integer(2)]);
    }

    #[test]
    fn command_info_answers_nil_for_unknown_names() {
        let reply = array(command_reply(&args(&["INFO", "get", "nosuch", "SET"])));
        assert_eq!(reply, vec![command_info(spec("get")), Reply::Bulk(None), command_info(spec("set"))]);
        assert_eq!(array(command_reply(&args(&["info"]))).len(), COMMANDS.len());
    }

    #[test]
    fn command_docs_of_get_hold_its_summary() {
        let docs = array(command_reply(&args(&["DOCS", "get"])));
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0], Reply::bulk("get"));
        let map = array(docs[1].clone());
        let field = |name: &str| {
            let position = map.iter().position(|item| *item == Reply::bulk(name)).expect("field present");
            map[position + 1].clone()
        };
        assert_eq!(field("summary"), Reply::bulk("Returns the string value of a key."));
        assert_eq!(field("since"), Reply::bulk("1.0.0"));
        assert_eq!(field("group"), Reply::bulk("string"));
        assert_eq!(field("complexity"), Reply::bulk("O(1)"));
    }

    #[test]
    fn command_docs_leave_out_unknown_names_and_use_redis_group_names() {
        let docs = array(command_reply(&args(&["docs", "nosuch", "del"])));
        assert_eq!(docs, command_docs(spec("del")));
        let map = array(docs[1].clone());
        assert!(map.windows(2).any(|pair| pair == [Reply::bulk("group"), Reply::bulk("generic")]));
        assert_eq!(array(command_reply(&args(&["DOCS"]))).len(), 2 * COMMANDS.len());
    }

    #[test]
    fn command_list_and_its_filters() {
        let names: Vec<Reply> = command_names().map(Reply::bulk).collect();
        assert_eq!(array(command_reply(&args(&["LIST"]))), names);
        assert_eq!(
            array(command_reply(&args(&["list", "FILTERBY", "pattern", "*GETR*"]))),
            vec![Reply::bulk("getrange")]
        );
        let transactions = array(command_reply(&args(&["list", "filterby", "aclcat", "transaction"])));
        assert_eq!(transactions, ["discard", "exec", "multi", "unwatch", "watch"].map(Reply::bulk).to_vec());
        assert_eq!(array(command_reply(&args(&["list", "filterby", "module", "x"]))), Vec::<Reply>::new());
        let syntax_error = Reply::Error("ERR syntax error".to_string());
        assert_eq!(command_reply(&args(&["list", "filterby", "color", "x"])), syntax_error);
        assert_eq!(command_reply(&args(&["list", "filterby", "pattern"])), syntax_error);
    }

    #[test]
    fn command_subcommand_errors() {
        assert!(matches!(command_reply(&args(&["GETKEYS", "get", "k"])),
            Reply::Error(message) if message.starts_with("ERR ")));
        assert_eq!(
            command_reply(&args(&["frob"])),
            Reply::Error("ERR unknown subcommand 'frob'. Try COMMAND HELP.".to_string())
        );
        assert!(matches!(command_reply(&args(&["help"])), Reply::Array(Some(lines)) if lines.len() > 5));
    }

    #[test]
    fn help_text_has_one_line_per_command() {
        let text = help_text();
        assert_eq!(text.lines().count(), COMMANDS.len());
        assert!(text.lines().any(|line| line == "GET key - Returns the string value of a key."));
        let help = command_help(spec("setver"));
        assert!(help.contains("SETVER key version value") && help.contains(spec("setver").summary));
    }

    #[test]
    fn glob_table() {
        let cases: &[(&[u8], &[u8], bool)] = &[
            // Redis's documented KEYS examples.
            (b"h?llo", b"hello", true),
            (b"h?llo", b"hallo", true),
            (b"h?llo", b"hxllo", true),
            (b"h?llo", b"hllo", false),
            (b"h*llo", b"hllo", true),
            (b"h*llo", b"heeeello", true),
            (b"h*llo", b"hello!", false),
            (b"h[ae]llo", b"hello", true),
            (b"h[ae]llo", b"hallo", true),
            (b"h[ae]llo", b"hillo", false),
            (b"h[^e]llo", b"hallo", true),
            (b"h[^e]llo", b"hbllo", true),
            (b"h[^e]llo", b"hello", false),
            (b"h[a-b]llo", b"hallo", true),
            (b"h[a-b]llo", b"hbllo", true),
            (b"h[a-b]llo", b"hcllo", false),
            // Ranges in either order, several items, negated ranges.
            (b"h[b-a]llo", b"hallo", true),
            (b"[a-cx-z]", b"y", true),
            (b"[a-cx-z]", b"d", false),
            (b"[^a-c]", b"d", true),
            (b"[^a-c]", b"b", false),
            // Escapes, outside and inside classes.
            (b"h\\*llo", b"h*llo", true),
            (b"h\\*llo", b"hello", false),
            (b"\\?", b"?", true),
            (b"\\?", b"a", false),
            (b"a\\", b"a\\", true),
            (b"[\\]]", b"]", true),
            (b"[a\\-z]", b"-", true),
            (b"[a\\-z]", b"b", false),
            (b"[\\^a]", b"^", true),
            // Empty classes: `[]` admits nothing, `[^]` anything; a `]` right after `[` closes it.
            (b"[]", b"a", false),
            (b"[^]", b"a", true),
            (b"[]a]", b"a", false),
            // A class without `]` takes the rest of the pattern, as Redis does.
            (b"[abc", b"b", true),
            (b"[abc", b"bc", false),
            (b"x[abc", b"xd", false),
            (b"a[", b"a", false),
            (b"a[", b"ab", false),
            (b"[", b"[", false),
            (b"[^", b"q", true),
            // A range whose end is `]`, as Redis reads it: `]` to `a`, then unterminated.
            (b"[a-]", b"_", true),
            (b"[a-]", b"b", false),
            // Stars.
            (b"*", b"", true),
            (b"**", b"", true),
            (b"*", b"anything", true),
            (b"**a", b"a", true),
            (b"a*", b"a", true),
            (b"*a", b"ba", true),
            (b"*a", b"ab", false),
            (b"a*b*c", b"aXbYc", true),
            (b"a*b*c", b"aXbY", false),
            (b"*[0-9]", b"key7", true),
            (b"user:*:name", b"user:42:name", true),
            (b"user:*:name", b"user:42:mail", false),
            (b"*?", b"", false),
            (b"*?", b"x", true),
            (b"", b"", true),
            (b"", b"a", false),
            (b"?", b"", false),
            // Binary-safe, and bytes compare unsigned.
            (b"\x00*\xff", b"\x00abc\xff", true),
            (b"[\x80-\xff]", b"\xc3", true),
            (b"[\x80-\xff]", b"a", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(
                glob_match(pattern, text),
                *expected,
                "pattern {:?} text {:?}",
                String::from_utf8_lossy(pattern),
                String::from_utf8_lossy(text)
            );
        }
    }

    #[test]
    fn glob_is_not_exponential() {
        // Redis's CVE-2022-36021 shape: backtracking over every star would take 10^4^30 steps.
        let mut pattern = b"a*".repeat(30);
        pattern.push(b'b');
        let mut text = vec![b'a'; 10_000];
        assert!(!glob_match(&pattern, &text));
        text.push(b'b');
        assert!(glob_match(&pattern, &text));
    }
}
