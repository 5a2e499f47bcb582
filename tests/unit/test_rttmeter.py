"""The RTT meter answers a receiver report that echoes any recent sender report."""

from testbed.rtc.rttmeter import RttMeter, middle_ntp

NTP_1 = 0x0001_0002_0003_0004
NTP_2 = 0x0001_0003_0003_0004


def test_a_report_answering_the_previous_sr_still_gives_a_sample() -> None:
    meter = RttMeter()
    meter.on_sender_report(NTP_1, now_s=10.0)
    meter.on_sender_report(NTP_2, now_s=10.3)  # aiortc would now accept only NTP_2's LSR
    sample = meter.on_report_block(middle_ntp(NTP_1), dlsr=int(0.5 * 65536), now_s=10.56)
    assert sample is not None and abs(sample - 0.06) < 1e-4
    assert meter.rtt_ms is not None and abs(meter.rtt_ms - 60) < 0.1 and meter.samples == 1


def test_smoothing_and_unanswerable_reports() -> None:
    meter = RttMeter(history=1)
    meter.on_sender_report(NTP_1, now_s=0.0)
    assert meter.on_report_block(0, 0, now_s=0.1) is None  # no SR heard yet by the receiver
    assert meter.on_report_block(middle_ntp(NTP_2), 0, now_s=0.1) is None  # never sent
    assert meter.on_report_block(middle_ntp(NTP_1), 2 * 65536, now_s=0.1) is None  # < 0
    meter.on_report_block(middle_ntp(NTP_1), 0, now_s=0.1)
    meter.on_report_block(middle_ntp(NTP_1), 0, now_s=0.2)
    assert meter.rtt_s is not None and abs(meter.rtt_s - (0.85 * 0.1 + 0.15 * 0.2)) < 1e-9
    meter.on_sender_report(NTP_2, now_s=1.0)  # history of one: NTP_1 forgotten
    assert meter.on_report_block(middle_ntp(NTP_1), 0, now_s=1.1) is None
