package gateway

// ACL returns the rules of a least-privileged Redis ACL user for
// `streamtally serve` under prefix, as arguments of ACL SETUSER after the
// user's name, on and password: read-only access to the keys under prefix,
// its channels, and only the commands the gateway sends. A gateway that
// serves browsers never needs to write, so its user cannot.
func ACL(prefix string, cluster bool) []string {
	rules := []string{
		"resetkeys", "%R~" + prefix + ":*",
		"resetchannels", "&" + prefix + ":*",
		"-@all",
		// Readiness and pub/sub health checks. AUTH and HELLO need no rule.
		"+ping",
		// Snapshots, and the version check that finds lost messages.
		"+multi", "+exec", "+hmget", "+hgetall", "+hget",
		// The bucket index of a bucketed view's series.
		"+zrangebyscore",
	}
	if cluster {
		return append(rules, "+ssubscribe", "+sunsubscribe", "+cluster|slots", "+command")
	}
	return append(rules, "+subscribe", "+unsubscribe")
}
