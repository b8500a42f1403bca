package publish

import (
	"github.com/redis/go-redis/v9"

	"github.com/streamtally/streamtally/config"
)

// NewClient returns a client for the Redis that c describes: a
// *redis.ClusterClient when c.Cluster, a *redis.Client otherwise. It
// connects on first use.
func NewClient(c config.Redis) (redis.UniversalClient, error) {
	tlsConfig, err := c.TLSConfig()
	if err != nil {
		return nil, err
	}
	if c.Cluster {
		return redis.NewClusterClient(&redis.ClusterOptions{
			Addrs:     c.Addrs,
			Username:  c.Username,
			Password:  c.Password,
			TLSConfig: tlsConfig,
		}), nil
	}
	return redis.NewClient(&redis.Options{
		Addr:      c.Addr,
		Username:  c.Username,
		Password:  c.Password,
		DB:        c.DB,
		TLSConfig: tlsConfig,
	}), nil
}
