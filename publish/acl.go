package publish

// ACL returns the rules of the least-privileged Redis ACL user for
// streamtally under prefix, as arguments of ACL SETUSER after the user's
// name, on and password: the keys and channels under prefix, and only the
// commands that run, snapshot and the readiness check send, scripts'
// commands included, and dead letters, which run adds and the dlq
// subcommand lists. In a cluster, deltas go out with SPUBLISH, and the
// client also reads the slot map and the command table.
func ACL(prefix string, cluster bool) []string {
	rules := []string{
		"resetkeys", "~" + prefix + ":*",
		"resetchannels", "&" + prefix + ":*",
		"-@all",
		// Readiness. AUTH and HELLO need no rule.
		"+ping",
		// Applying a batch: the script, its commands and the fences. The
		// script reads Redis's clock for holds and bucket expiry.
		"+evalsha", "+eval", "+hget", "+hmget", "+exists", "+hset", "+hsetnx", "+hincrby", "+hdel", "+time",
		// Time buckets: their expiry and the index of live buckets.
		"+pexpireat", "+zadd", "+zrem", "+zremrangebyscore",
		// Snapshots, and series of bucketed views.
		"+multi", "+exec", "+hgetall", "+zrangebyscore",
		// Dead letters.
		"+xadd", "+xrevrange",
	}
	if cluster {
		return append(rules, "+spublish", "+cluster|slots", "+command")
	}
	return append(rules, "+publish")
}
