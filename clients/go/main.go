// Command example shows how to call smsgw (sms.v1) from Go with grpc-go.
//
// Build and run it against a server (clients/run.sh does all of this for you):
//
//	bash clients/go/build.sh          # protoc -> gopath/src/smsgw/gen/go/sms/v1, go build
//	export SMSGW_ADDR=127.0.0.1:50051
//	export SMSGW_API_KEY=app_... SMSGW_API_SECRET=sec_...   # smsgw account create NAME
//	clients/go/bin/smsgw-example
//
// The stubs are generated from proto/sms/v1/*.proto with protoc-gen-go and
// protoc-gen-go-grpc (import path "smsgw/gen/go/sms/v1", from the protos' go_package).
// Rich error details (google.rpc.ErrorInfo, BadRequest, RetryInfo) are the types of
// google.golang.org/genproto/googleapis/rpc/errdetails; status.FromError decodes the
// `grpc-status-details-bin` trailer into them.
//
// It sends a message, checks a verification code (a wrong one, then the right one),
// shows a rejected request's google.rpc details, and follows the message's status
// stream until the message is final. It exits 0 only if everything went as expected.
package main

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log"
	"os"
	"strings"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	smsv1 "smsgw/gen/go/sms/v1"
)

// basicAuth adds `authorization: Basic base64(api_key:api_secret)` to every call.
type basicAuth struct{ key, secret string }

func (a basicAuth) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	token := base64.StdEncoding.EncodeToString([]byte(a.key + ":" + a.secret))
	return map[string]string{"authorization": "Basic " + token}, nil
}

// RequireTransportSecurity is false so the example runs over plain TCP on 127.0.0.1;
// with TLS to a real server, return true so the secret never travels in clear text.
func (basicAuth) RequireTransportSecurity() bool { return false }

// check is the example's own assertion: a failed one ends the program with exit code 1.
func check(ok bool, what string) {
	if !ok {
		log.Fatalf("FAILED: %s", what)
	}
}

func getenv(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// final reports whether a message status never changes again (API.md).
func final(s smsv1.MessageStatus) bool {
	switch s {
	case smsv1.MessageStatus_MESSAGE_STATUS_DELIVERED, smsv1.MessageStatus_MESSAGE_STATUS_UNDELIVERED,
		smsv1.MessageStatus_MESSAGE_STATUS_FAILED, smsv1.MessageStatus_MESSAGE_STATUS_REJECTED,
		smsv1.MessageStatus_MESSAGE_STATUS_CANCELLED:
		return true
	}
	return false
}

func main() {
	log.SetFlags(0)
	addr := getenv("SMSGW_ADDR", "127.0.0.1:50051")
	auth := basicAuth{os.Getenv("SMSGW_API_KEY"), os.Getenv("SMSGW_API_SECRET")}
	check(auth.key != "" && auth.secret != "", "SMSGW_API_KEY and SMSGW_API_SECRET are set")
	// A different number per example: codes to one number are limited to one a minute.
	verifyMobile := getenv("SMSGW_VERIFY_MOBILE", "+8613800138003")

	// One connection for all calls. (grpc-go 1.63+: grpc.NewClient with
	// grpc.WithTransportCredentials(insecure.NewCredentials()); TLS: credentials.NewTLS.)
	conn, err := grpc.Dial(addr, grpc.WithInsecure(), grpc.WithPerRPCCredentials(auth))
	if err != nil {
		log.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	messages := smsv1.NewMessageServiceClient(conn)
	verifications := smsv1.NewVerificationServiceClient(conn)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	// 1. Send a message. It is stored durably before the answer comes back.
	sent, err := messages.SendMessage(ctx, &smsv1.SendMessageRequest{
		Mobile:  "+8613800138000",
		UseType: smsv1.UseType_USE_TYPE_NOTIFICATION,
		Content: &smsv1.SendMessageRequest_Text{Text: "Your order has shipped."},
	})
	if err != nil {
		log.Fatalf("FAILED: SendMessage: %v", err)
	}
	fmt.Printf("sent message %s to %s (%d segment(s))\n", sent.Id, sent.ToNumber, sent.Segments)
	check(sent.Status == smsv1.MessageStatus_MESSAGE_STATUS_PENDING, "a new message is PENDING")

	// 2a. A verification code. We choose the code ourselves (Code) so that the example
	// knows a wrong one; normally the server draws it and you leave Code empty.
	otp, err := verifications.SendVerification(ctx, &smsv1.SendVerificationRequest{
		Mobile: verifyMobile, Scene: "login", Code: "123456",
	})
	if err != nil {
		log.Fatalf("FAILED: SendVerification: %v", err)
	}
	fmt.Printf("verification %s sent to %s\n", otp.VerifyId, verifyMobile)

	// A wrong code is not an error: the answer is OK with Valid=false and the attempts
	// left. (Expired or exhausted codes are FAILED_PRECONDITION errors.)
	wrong, err := verifications.CheckVerification(ctx, &smsv1.CheckVerificationRequest{
		VerifyId: otp.VerifyId, Mobile: verifyMobile, Code: "654321",
	})
	if err != nil {
		log.Fatalf("FAILED: CheckVerification: %v", err)
	}
	fmt.Printf("wrong code: valid=%t, %d attempts left\n", wrong.Valid, wrong.RemainingAttempts)
	check(!wrong.Valid && wrong.RemainingAttempts == 2, "a wrong code leaves 2 attempts")
	right, err := verifications.CheckVerification(ctx, &smsv1.CheckVerificationRequest{
		VerifyId: otp.VerifyId, Mobile: verifyMobile, Code: "123456",
	})
	if err != nil {
		log.Fatalf("FAILED: CheckVerification: %v", err)
	}
	fmt.Printf("right code: valid=%t\n", right.Valid)
	check(right.Valid, "the right code verifies")

	// 2b. A bad request: INVALID_ARGUMENT with google.rpc details. status.FromError
	// gives the google.rpc.Status from the `grpc-status-details-bin` trailer; Details()
	// unpacks each google.protobuf.Any into its errdetails type.
	_, err = messages.SendMessage(ctx, &smsv1.SendMessageRequest{
		Mobile:  "12",
		UseType: smsv1.UseType_USE_TYPE_NOTIFICATION,
		Content: &smsv1.SendMessageRequest_Text{Text: "x"},
	})
	check(err != nil, "an invalid mobile is refused")
	st, _ := status.FromError(err)
	fmt.Printf("bad request: %s: %s\n", st.Code(), st.Message())
	check(st.Code() == codes.InvalidArgument, "INVALID_ARGUMENT")
	check(len(st.Details()) > 0, "the error carries google.rpc.Status details")
	var fields []string
	var reason string
	for _, detail := range st.Details() {
		switch d := detail.(type) {
		case *errdetails.BadRequest:
			for _, violation := range d.FieldViolations {
				fmt.Printf("  field %s: %s\n", violation.Field, violation.Description)
				fields = append(fields, violation.Field)
			}
		case *errdetails.ErrorInfo:
			fmt.Printf("  reason %s (domain %s) %v\n", d.Reason, d.Domain, d.Metadata)
			reason = d.Reason
		case *errdetails.RetryInfo: // RESOURCE_EXHAUSTED and UNAVAILABLE carry one
			fmt.Printf("  retry after %v\n", d.RetryDelay)
		case error: // a detail whose type is not linked into this program
			fmt.Printf("  undecodable detail: %v\n", d)
		}
	}
	check(contains(fields, "mobile"), "the BadRequest names the field `mobile`")
	check(reason != "", "the ErrorInfo has a reason")

	// 3. Follow the message until it is final. With Ids the stream first sends the
	// current state, then each change, and ends (io.EOF) by itself at a final status.
	stream, err := messages.WatchMessageStatus(ctx, &smsv1.WatchMessageStatusRequest{Ids: []string{sent.Id}})
	if err != nil {
		log.Fatalf("FAILED: WatchMessageStatus: %v", err)
	}
	last := smsv1.MessageStatus_MESSAGE_STATUS_UNSPECIFIED
	for {
		event, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			break // the server ended the stream: every watched message is final
		}
		if err != nil {
			log.Fatalf("FAILED: WatchMessageStatus: %v", err)
		}
		last = event.Status
		fmt.Println(strings.TrimSpace(fmt.Sprintf("event %d: %s %s %s", event.EventId, event.MessageId, event.Status, event.ErrorCode)))
	}
	check(final(last), "the stream ends at a final status")
	check(last == smsv1.MessageStatus_MESSAGE_STATUS_DELIVERED, "the message is DELIVERED")

	fmt.Println("go example: OK")
}

func contains(list []string, item string) bool {
	for _, value := range list {
		if value == item {
			return true
		}
	}
	return false
}
