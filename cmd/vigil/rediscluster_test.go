package main

import (
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/require"
)

func TestRedisOptions(t *testing.T) {
	o, err := redisOptions("127.0.0.1:6379", false, time.Second)
	require.NoError(t, err)
	require.Equal(t, []string{"127.0.0.1:6379"}, o.Addrs)
	require.False(t, o.IsClusterMode, "one address stays a single Redis")
	c := newRedisClient(o)
	require.IsType(t, &redis.Client{}, c)
	c.Close()

	o, err = redisOptions(" 10.0.0.1:7000, 10.0.0.2:7000 ,,10.0.0.3:7000", false, time.Second)
	require.NoError(t, err)
	require.Equal(t, []string{"10.0.0.1:7000", "10.0.0.2:7000", "10.0.0.3:7000"}, o.Addrs)
	require.Equal(t, time.Second, o.ReadTimeout)
	c = newRedisClient(o)
	cc, ok := c.(*redis.ClusterClient)
	require.True(t, ok, "several addresses are a cluster: %T", c)
	require.Equal(t, clusterReload, cc.Options().ClusterStateReloadInterval)
	require.Equal(t, time.Second, cc.Options().ReadTimeout)
	c.Close()

	o, err = redisOptions("seed:7000", true, time.Second)
	require.NoError(t, err)
	require.True(t, o.IsClusterMode)

	for _, bad := range []string{",", " ", "127.0.0.1", "127.0.0.1:6379,nohost", "[::1"} {
		_, err := redisOptions(bad, false, time.Second)
		require.Error(t, err, "%q", bad)
	}
}
