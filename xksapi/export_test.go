package xksapi

import "time"

// LongestHandlerTime is the upper bound of the highest bucket holding a
// handler time the CPU wait estimate was given (0 when none): what the
// shedder would take for time in the node.
func LongestHandlerTime(s *Server) time.Duration {
	counts := s.handlerTimes.read(nil)
	for i := len(counts) - 1; i >= 0; i-- {
		if counts[i] > 0 {
			return time.Duration(handlerTimeBounds[i+1] * float64(time.Second))
		}
	}
	return 0
}
