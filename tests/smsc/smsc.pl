#!/usr/bin/perl
# A test SMSC on Debian's Net::SMPP (libnet-smpp-perl), an SMPP 3.4 implementation
# independent of the library smsgw's transport uses (smpp34). It listens, accepts
# bind_transceiver / bind_transmitter / bind_receiver (system_id and password checked),
# answers enquire_link, answers each submit_sm with a message id and, after
# --delivery-delay seconds, sends a delivery receipt as deliver_sm (esm_class 0x04, the
# receipt text of SMPP 3.4 appendix B and the receipted_message_id / message_state
# TLVs).
#
# Every PDU it receives, and every answer or receipt it sends, is one JSON line in
# --log (written at once, so a test that kills this process still reads all of it).
# Binary fields (short_message, TLV values) are hex.
#
# Faults, for --fail-rate of the submit_sm (as the HTTP emulators' controls):
#   http_500 -> submit_sm_resp ESME_RSYSERR (0x08)
#   html     -> submit_sm_resp ESME_RTHROTTLED (0x58)
#   garbage  -> a generic_nack (ESME_RINVCMDID) for the submit_sm's sequence number
#   timeout  -> no answer at all
#   drop     -> the connection is closed without an answer
# --latency delays every submit_sm_resp (to hold a submit window open).
# --receipt-first sends each receipt before the submit_sm_resp it reports on.
# --reject-prefix refuses destinations starting with it: ESME_RINVDSTADR (0x0B).
#
# A receipt whose connection has closed goes to another bound receiver or
# transceiver, or waits for the next bind (as an SMSC stores and forwards them).
# Standard input takes JSON commands, one a line:
#   {"cmd":"mo","source_addr":"...","destination_addr":"...","short_message_hex":"...",
#    "data_coding":0,"esm_class":0}          -> a mobile-originated deliver_sm
#   {"cmd":"set","outcome":"undelivered",...} -> change a control
# Prints "LISTENING <port>" on standard output once it listens.
use strict;
use warnings;
use Getopt::Long;
use IO::Select;
use JSON::PP;
use POSIX qw(strftime);
use Time::HiRes qw(time);
use Net::SMPP;

my %opt = (
    port => 0, 'system-id' => 'smsgw', password => 'secret', log => '/dev/null',
    'delivery-delay' => 0.2, outcome => 'delivered', 'fail-rate' => 0.0,
    fault => 'http_500', latency => 0.0, seed => 1, receipts => 1, 'reject-prefix' => '',
    'receipt-first' => 0,
);
GetOptions(\%opt, 'port=i', 'system-id=s', 'password=s', 'log=s', 'delivery-delay=f',
    'outcome=s', 'fail-rate=f', 'fault=s', 'latency=f', 'seed=i', 'receipts=i',
    'reject-prefix=s', 'receipt-first=i')
    or die "bad arguments\n";
srand($opt{seed});

my $json = JSON::PP->new->canonical(1);
open(my $log, '>>', $opt{log}) or die "cannot open $opt{log}: $!\n";
$log->autoflush(1);
sub record { $_[0]{t} = time; print $log $json->encode($_[0]), "\n"; }

my $listener = Net::SMPP->new_listen('127.0.0.1', port => $opt{port}, smpp_version => 0x34)
    or die "cannot listen: $!\n";
$| = 1;
print "LISTENING ", $listener->sockport, "\n";

my $select = IO::Select->new($listener, \*STDIN);
my (%conns, %bound);    # fileno -> connection, fileno -> bind type
my $next_conn = 0;
my %conn_id;            # fileno -> number (in the log)
my $next_id = 1000;
my @timers;             # [at, code]
my $stdin_buffer = '';

my %CMD = (
    0x00000009 => 'bind_transceiver', 0x00000002 => 'bind_transmitter',
    0x00000001 => 'bind_receiver', 0x00000004 => 'submit_sm', 0x00000015 => 'enquire_link',
    0x00000006 => 'unbind', 0x80000005 => 'deliver_sm_resp', 0x00000103 => 'data_sm',
    0x80000015 => 'enquire_link_resp', 0x80000000 => 'generic_nack',
);
my %TLV_NAME = (0x0424 => 'message_payload', 0x020C => 'sar_msg_ref_num',
    0x020E => 'sar_total_segments', 0x020F => 'sar_segment_seqnum');

sub later { my ($delay, $code) = @_; push @timers, [time + $delay, $code]; }

sub tlvs_of {
    my ($pdu) = @_;
    my %t;
    for my $k (keys %$pdu) {
        next unless $k =~ /^\d+$/;
        $t{sprintf('0x%04x', $k)} = unpack('H*', $pdu->{$k});
    }
    return \%t;
}

sub close_conn {
    my ($c) = @_;
    my $fd = fileno($c);
    return unless defined $fd && $conns{$fd};
    record({event => 'closed', conn => $conn_id{$fd}});
    $select->remove($c);
    delete $conns{$fd};
    delete $bound{$fd};
    close($c);
}

my @held;    # receipts for a connection that closed, for the next bind (store and forward)

sub a_receiver {
    my ($fd) = grep { $bound{$_} ne 'bind_transmitter' } sort keys %bound;
    return defined $fd ? $conns{$fd} : undef;
}

sub send_receipt {
    my ($c, $submit, $message_id) = @_;
    my $fd = defined $c ? fileno($c) : undef;
    unless (defined $fd && $conns{$fd} && $conns{$fd} == $c && $bound{$fd}) {
        $c = a_receiver();
        unless ($c) { push @held, [$submit, $message_id]; return; }
        $fd = fileno($c);
    }
    my $delivered = $opt{outcome} eq 'delivered';
    my ($stat, $state, $err) = $delivered ? ('DELIVRD', 2, '000') : ('UNDELIV', 5, '001');
    my $now = strftime('%y%m%d%H%M', gmtime);
    my $text = sprintf('id:%s sub:001 dlvrd:%s submit date:%s done date:%s stat:%s err:%s text:',
        $message_id, $delivered ? '001' : '000', $now, $now, $stat, $err);
    my $seq = $c->deliver_sm(
        async => 1,
        source_addr_ton => $submit->{dest_addr_ton}, source_addr_npi => $submit->{dest_addr_npi},
        source_addr => $submit->{destination_addr},
        dest_addr_ton => $submit->{source_addr_ton}, dest_addr_npi => $submit->{source_addr_npi},
        destination_addr => $submit->{source_addr},
        esm_class => 0x04, data_coding => 0, short_message => $text,
        receipted_message_id => "$message_id\0", message_state => pack('C', $state),
    );
    record({event => 'receipt', conn => $conn_id{$fd}, seq => $seq, message_id => $message_id,
        stat => $stat});
}

sub answer_submit {
    my ($c, $pdu) = @_;
    my $fd = fileno($c);
    return unless defined $fd && $conns{$fd};
    my $prefix = $opt{'reject-prefix'};
    if ($prefix ne '' && index($pdu->{destination_addr}, $prefix) == 0) {
        record({event => 'rejected', conn => $conn_id{$fd}, seq => $pdu->{seq}});
        $c->submit_sm_resp(seq => $pdu->{seq}, status => 0x0B, message_id => '');  # RINVDSTADR
        return;
    }
    if ($opt{'fail-rate'} > 0 && rand() < $opt{'fail-rate'}) {
        my $fault = $opt{fault};
        record({event => 'fault', conn => $conn_id{$fd}, seq => $pdu->{seq}, fault => $fault});
        if ($fault eq 'http_500') { $c->submit_sm_resp(seq => $pdu->{seq}, status => 0x08, message_id => ''); }
        elsif ($fault eq 'html') { $c->submit_sm_resp(seq => $pdu->{seq}, status => 0x58, message_id => ''); }
        elsif ($fault eq 'garbage') { $c->generic_nack(seq => $pdu->{seq}, status => 0x03); }
        elsif ($fault eq 'drop') { close_conn($c); }
        # timeout: no answer
        return;
    }
    my $message_id = sprintf('%x', $next_id++);
    if ($opt{'receipt-first'}) {    # the receipt overtakes the answer (a racing SMSC)
        send_receipt($c, $pdu, $message_id);
    }
    # recorded first: a test that has the answer finds it in the log
    record({event => 'submit_sm_resp', conn => $conn_id{$fd}, seq => $pdu->{seq},
        message_id => $message_id});
    $c->submit_sm_resp(seq => $pdu->{seq}, message_id => $message_id);
    if ($opt{receipts} && !$opt{'receipt-first'} && ($pdu->{registered_delivery} & 0x03)) {
        later($opt{'delivery-delay'}, sub { send_receipt($c, $pdu, $message_id) });
    }
}

sub on_pdu {
    my ($c, $pdu) = @_;
    my $fd = fileno($c);
    my $cmd = $pdu->{cmd};
    my $name = $CMD{$cmd} // sprintf('0x%08x', $cmd);
    my %line = (event => 'pdu', conn => $conn_id{$fd}, cmd => $name, seq => $pdu->{seq},
        status => $pdu->{status});
    if ($name =~ /^bind_/) {
        $line{system_id} = $pdu->{system_id};
        $line{system_type} = $pdu->{system_type};
        $line{interface_version} = $pdu->{interface_version};
        # the password is checked, never logged
        my $ok = ($pdu->{system_id} // '') eq $opt{'system-id'}
            && ($pdu->{password} // '') eq $opt{password};
        record(\%line);
        my $resp = $name . '_resp';
        if ($ok) {
            $bound{$fd} = $name;
            $c->$resp(seq => $pdu->{seq}, system_id => 'NetSMPP');
            if ($name ne 'bind_transmitter') {
                my @now = @held;
                @held = ();
                send_receipt($c, @$_) for @now;
            }
        } else {
            # SMPP 3.4 5.1.2: an error response carries no body (the header alone).
            my $id = {bind_transceiver => 0x80000009, bind_transmitter => 0x80000002,
                bind_receiver => 0x80000001}->{$name};
            $c->syswrite(pack('NNNN', 16, $id, 0x0E, $pdu->{seq}));
            record({event => 'bind_refused', conn => $conn_id{$fd}});
        }
        return;
    }
    if ($name eq 'submit_sm') {
        for my $f (qw(service_type source_addr_ton source_addr_npi source_addr dest_addr_ton
            dest_addr_npi destination_addr esm_class protocol_id priority_flag
            registered_delivery data_coding)) {
            $line{$f} = $pdu->{$f};
        }
        $line{short_message_hex} = unpack('H*', $pdu->{short_message} // '');
        $line{tlvs} = tlvs_of($pdu);
        record(\%line);
        unless ($bound{$fd}) {
            $c->submit_sm_resp(seq => $pdu->{seq}, status => 0x04, message_id => '');
            return;
        }
        if ($opt{latency} > 0) { later($opt{latency}, sub { answer_submit($c, $pdu) }); }
        else { answer_submit($c, $pdu); }
        return;
    }
    record(\%line);
    if ($name eq 'enquire_link') { $c->enquire_link_resp(seq => $pdu->{seq}); }
    elsif ($name eq 'unbind') { $c->unbind_resp(seq => $pdu->{seq}); close_conn($c); }
    elsif ($cmd & 0x80000000) { }    # responses: recorded only
    else { $c->generic_nack(seq => $pdu->{seq}, status => 0x03); }
}

sub on_command {
    my ($line) = @_;
    my $cmd = eval { $json->decode($line) } or return;
    if ($cmd->{cmd} eq 'set') {
        for my $k (keys %$cmd) { $opt{$k} = $cmd->{$k} unless $k eq 'cmd'; }
        record({event => 'set'});
    } elsif ($cmd->{cmd} eq 'mo') {
        my $c = a_receiver();
        if (!$c) { record({event => 'mo_unsent'}); return; }
        my $fd = fileno($c);
        my $seq = $c->deliver_sm(
            async => 1, source_addr_ton => 1, source_addr_npi => 1,
            source_addr => $cmd->{source_addr}, dest_addr_ton => 1, dest_addr_npi => 1,
            destination_addr => $cmd->{destination_addr}, esm_class => $cmd->{esm_class} // 0,
            data_coding => $cmd->{data_coding} // 0,
            short_message => pack('H*', $cmd->{short_message_hex}),
        );
        record({event => 'mo', conn => $conn_id{$fd}, seq => $seq});
    }
}

while (1) {
    my $timeout = 0.5;
    if (@timers) {
        @timers = sort { $a->[0] <=> $b->[0] } @timers;
        my $wait = $timers[0][0] - time;
        $timeout = $wait < 0 ? 0 : ($wait < $timeout ? $wait : $timeout);
    }
    for my $fh ($select->can_read($timeout)) {
        if ($fh == $listener) {
            my $c = $listener->accept or next;
            my $fd = fileno($c);
            $conns{$fd} = $c;
            $conn_id{$fd} = ++$next_conn;
            $select->add($c);
            record({event => 'connected', conn => $next_conn});
        } elsif ($fh == \*STDIN) {
            # sysread, not <STDIN>: buffered lines would be invisible to select
            my $n = sysread(STDIN, $stdin_buffer, 65536, length $stdin_buffer);
            if (!$n) { $select->remove(\*STDIN); next; }
            while ($stdin_buffer =~ s/^([^\n]*)\n//) { on_command($1); }
        } else {
            my $pdu = $fh->read_pdu();
            if (!$pdu) { close_conn($fh); next; }
            on_pdu($fh, $pdu);
        }
    }
    while (@timers && $timers[0][0] <= time) {
        my $t = shift @timers;
        $t->[1]->();
    }
}
