//go:build !race

package xksapi_test

const raceEnabled = false
