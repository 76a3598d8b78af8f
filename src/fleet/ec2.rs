//! The `ec2` provider: each machine is an EC2 instance, through aws-sdk-ec2.

// Contract stub for issue 13: the ec2 helper writes the provider.
